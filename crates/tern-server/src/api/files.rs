//! Files over HTTP: uploads speak tus 1.0 (core, creation, creation-with-upload, checksum,
//! termination, expiration) at `/v1/files/`, so existing tus clients work unchanged; downloads
//! are plain `GET /v1/files/{id}` with ranges and ETags. The rules are in `files/` (uploads)
//! and `logic/files.rs` (who may read).

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use futures_util::TryStreamExt;
use tern_proto::rest::{ErrorBody, FileInfo, SignedUrl, Stickers};

use super::{ApiState, Caller, PathParams};
use crate::error::Error;
use crate::files::{Checksum, NewUpload, media};
use crate::store::FileRecord;

/// The tus version spoken.
const TUS_VERSION: &str = "1.0.0";
/// The tus extensions implemented.
const TUS_EXTENSIONS: &str = "creation,creation-with-upload,checksum,termination,expiration";
/// The content type of tus `PATCH` bodies.
const OFFSET_OCTET_STREAM: &str = "application/offset+octet-stream";

/// Adds the header every tus response carries.
fn tus(mut resp: Response) -> Response {
    resp.headers_mut().insert("tus-resumable", HeaderValue::from_static(TUS_VERSION));
    resp
}

/// A tus error: tern's JSON error body with the tus header.
fn tus_error(e: Error) -> Response {
    tus(e.into_response())
}

fn header_str<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

fn number(headers: &HeaderMap, name: &str) -> Result<Option<u64>, Error> {
    header_str(headers, name)
        .map(|v| {
            v.trim().parse::<u64>().map_err(|_| Error::bad_request(format!("{name} must be a non-negative integer")))
        })
        .transpose()
}

/// The version check every tus request but `OPTIONS` makes: the refusal, if any.
fn version_refusal(headers: &HeaderMap) -> Option<Response> {
    match header_str(headers, "tus-resumable") {
        Some(TUS_VERSION) => None,
        other => {
            let msg = match other {
                Some(v) => format!("tus version {v} is not supported; this server speaks {TUS_VERSION}"),
                None => format!("missing Tus-Resumable header; this server speaks tus {TUS_VERSION}"),
            };
            let mut resp = tus_error(Error::bad_request(msg));
            *resp.status_mut() = StatusCode::PRECONDITION_FAILED;
            resp.headers_mut().insert("tus-version", HeaderValue::from_static(TUS_VERSION));
            Some(resp)
        }
    }
}

/// When an incomplete upload expires, as tus's `Upload-Expires` (an HTTP date).
fn expires(file: &FileRecord) -> Option<HeaderValue> {
    if file.complete() {
        return None;
    }
    let at = std::time::UNIX_EPOCH + std::time::Duration::from_millis(file.expires_at);
    HeaderValue::from_str(&httpdate::fmt_http_date(at)).ok()
}

/// Parses tus `Upload-Metadata`: `key base64value` pairs separated by commas (the value may be
/// absent). Returns the `filename` and whether `public` is set.
fn parse_metadata(raw: &str) -> Result<(String, bool), Error> {
    let mut name = String::new();
    let mut public = false;
    if raw.len() > 4096 {
        return Err(Error::bad_request("Upload-Metadata is longer than 4096 bytes"));
    }
    for pair in raw.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let (key, value) = pair.split_once(' ').unwrap_or((pair, ""));
        let value = data_encoding::BASE64
            .decode(value.trim().as_bytes())
            .map_err(|_| Error::bad_request(format!("Upload-Metadata value of {key:?} is not base64")))?;
        match key {
            "filename" | "name" => {
                name = String::from_utf8(value)
                    .map_err(|_| Error::bad_request("Upload-Metadata filename is not UTF-8"))?;
            }
            "public" => public = matches!(&value[..], b"true" | b"1"),
            _ => {}
        }
    }
    Ok((name, public))
}

/// `OPTIONS /v1/files/`: what this tus server supports.
#[utoipa::path(options, path = "/v1/files", tag = "files",
    responses((status = 204, description = "tus discovery: Tus-Version, Tus-Extension, Tus-Max-Size, Tus-Checksum-Algorithm")))]
pub(super) async fn discover(State(s): State<ApiState>) -> Response {
    let mut resp = StatusCode::NO_CONTENT.into_response();
    let h = resp.headers_mut();
    h.insert("tus-version", HeaderValue::from_static(TUS_VERSION));
    h.insert("tus-extension", HeaderValue::from_static(TUS_EXTENSIONS));
    h.insert("tus-max-size", HeaderValue::from(s.files.config().max_file_bytes));
    h.insert("tus-checksum-algorithm", HeaderValue::from_static(Checksum::ALGORITHMS));
    tus(resp)
}

/// The request body as the files service reads it.
fn body_stream(body: Body) -> impl futures_util::Stream<Item = Result<bytes::Bytes, Error>> + Send {
    body.into_data_stream().map_err(|e| Error::bad_request(format!("the request body broke off: {e}")))
}

/// Checks a body-carrying tus request's content type.
fn octet_stream(headers: &HeaderMap) -> Result<bool, Error> {
    match header_str(headers, "content-type") {
        Some(t) if t.trim().eq_ignore_ascii_case(OFFSET_OCTET_STREAM) => Ok(true),
        Some(_) => Err(Error::new(
            tern_proto::ErrorCode::BadRequest,
            format!("upload bytes must be sent as Content-Type: {OFFSET_OCTET_STREAM}"),
        )),
        None => Ok(false),
    }
}

fn unsupported_media(e: Error) -> Response {
    let mut resp = tus_error(e);
    *resp.status_mut() = StatusCode::UNSUPPORTED_MEDIA_TYPE;
    resp
}

/// `POST /v1/files/`: creates an upload (tus creation), with its first bytes if the body
/// carries any (creation-with-upload).
#[utoipa::path(post, path = "/v1/files", tag = "files", security(("bearer" = [])),
    params(("Tus-Resumable" = String, Header, description = "1.0.0"), ("Upload-Length" = u64, Header, description = "Total bytes"),
        ("Upload-Metadata" = Option<String>, Header, description = "tus metadata: `filename` (base64), `public` (base64 of true) for avatars and stickers")),
    responses((status = 201, description = "Created; Location names the upload, Upload-Offset says how much of the body was kept"),
        (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 403, description = "Over the user's quota", body = ErrorBody),
        (status = 412, description = "Unsupported tus version", body = ErrorBody), (status = 413, body = ErrorBody),
        (status = 415, body = ErrorBody), (status = 460, description = "Checksum mismatch", body = ErrorBody)))]
pub(super) async fn create(State(s): State<ApiState>, Caller(caller): Caller, req: Request) -> Response {
    let (parts, body) = req.into_parts();
    if let Some(resp) = version_refusal(&parts.headers) {
        return resp;
    }
    let with_body = match octet_stream(&parts.headers) {
        Ok(b) => b,
        Err(e) => return unsupported_media(e),
    };
    let created = async {
        if parts.headers.contains_key("upload-defer-length") {
            return Err(Error::bad_request("Upload-Defer-Length is not supported: send Upload-Length"));
        }
        let length = number(&parts.headers, "upload-length")?
            .ok_or_else(|| Error::bad_request("missing Upload-Length header"))?;
        let metadata = header_str(&parts.headers, "upload-metadata").unwrap_or("").to_owned();
        let (name, public) = parse_metadata(&metadata)?;
        let checksum = header_str(&parts.headers, "upload-checksum").map(Checksum::parse).transpose()?;
        let upload = s.files.create(caller.user_id, NewUpload { length, metadata, name, public }).await?;
        if !with_body || upload.complete() {
            return Ok((upload, None));
        }
        // creation-with-upload: the upload exists whatever happens to its first bytes.
        let id = upload.id.clone();
        match s.files.append(upload, 0, checksum, body_stream(body)).await {
            Ok(upload) => Ok((upload, None)),
            Err(e) => Ok((s.files.owned(caller.user_id, &id).await?, Some(e))),
        }
    }
    .await;
    let (upload, _failed_bytes) = match created {
        Ok(v) => v,
        Err(e) => return tus_error(e),
    };
    let mut resp = StatusCode::CREATED.into_response();
    let h = resp.headers_mut();
    if let Ok(loc) = HeaderValue::from_str(&format!("/v1/files/{}", upload.id)) {
        h.insert(header::LOCATION, loc);
    }
    h.insert("upload-offset", HeaderValue::from(upload.offset));
    if let Some(exp) = expires(&upload) {
        h.insert("upload-expires", exp);
    }
    tus(resp)
}

/// `HEAD /v1/files/{id}`: where an upload stands (tus), for its owner.
#[utoipa::path(head, path = "/v1/files/{file_id}", tag = "files", security(("bearer" = [])),
    params(("file_id" = String, Path, description = "The upload")),
    responses((status = 200, description = "Upload-Offset, Upload-Length, Upload-Metadata"), (status = 404, description = "No such upload of the caller's"),
        (status = 401, description = "No valid login token"), (status = 412, description = "Unsupported tus version")))]
pub(super) async fn head(
    State(s): State<ApiState>,
    Caller(caller): Caller,
    PathParams(id): PathParams<String>,
    headers: HeaderMap,
) -> Response {
    if let Some(resp) = version_refusal(&headers) {
        return resp;
    }
    let upload = match s.files.owned(caller.user_id, &id).await {
        Ok(u) => u,
        Err(e) => return tus_error(e),
    };
    let mut resp = StatusCode::OK.into_response();
    let h = resp.headers_mut();
    h.insert("upload-offset", HeaderValue::from(upload.offset));
    h.insert("upload-length", HeaderValue::from(upload.length));
    if let Ok(meta) = HeaderValue::from_str(&upload.metadata)
        && !upload.metadata.is_empty()
    {
        h.insert("upload-metadata", meta);
    }
    if let Some(exp) = expires(&upload) {
        h.insert("upload-expires", exp);
    }
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    tus(resp)
}

/// `PATCH /v1/files/{id}`: appends bytes at `Upload-Offset` (tus core).
#[utoipa::path(patch, path = "/v1/files/{file_id}", tag = "files", security(("bearer" = [])),
    params(("file_id" = String, Path, description = "The upload"), ("Tus-Resumable" = String, Header, description = "1.0.0"),
        ("Upload-Offset" = u64, Header, description = "Where these bytes go: where the upload stands"),
        ("Upload-Checksum" = Option<String>, Header, description = "`sha1 <base64>` or `sha256 <base64>` of this request's bytes")),
    request_body(content = Vec<u8>, content_type = "application/offset+octet-stream"),
    responses((status = 204, description = "Upload-Offset: where the upload now stands"), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 404, body = ErrorBody), (status = 409, description = "Upload-Offset is not where the upload stands", body = ErrorBody),
        (status = 412, body = ErrorBody), (status = 415, body = ErrorBody), (status = 423, description = "Another request is writing to the upload", body = ErrorBody),
        (status = 460, description = "Checksum mismatch: nothing of the request kept", body = ErrorBody)))]
pub(super) async fn append(
    State(s): State<ApiState>,
    Caller(caller): Caller,
    PathParams(id): PathParams<String>,
    req: Request,
) -> Response {
    let (parts, body) = req.into_parts();
    if let Some(resp) = version_refusal(&parts.headers) {
        return resp;
    }
    match octet_stream(&parts.headers) {
        Ok(true) => {}
        Ok(false) => {
            return unsupported_media(Error::bad_request(format!("PATCH needs Content-Type: {OFFSET_OCTET_STREAM}")));
        }
        Err(e) => return unsupported_media(e),
    }
    let result = async {
        let offset = number(&parts.headers, "upload-offset")?
            .ok_or_else(|| Error::bad_request("missing Upload-Offset header"))?;
        let checksum = header_str(&parts.headers, "upload-checksum").map(Checksum::parse).transpose()?;
        let upload = s.files.owned(caller.user_id, &id).await?;
        s.files.append(upload, offset, checksum, body_stream(body)).await
    }
    .await;
    match result {
        Ok(upload) => {
            let mut resp = StatusCode::NO_CONTENT.into_response();
            resp.headers_mut().insert("upload-offset", HeaderValue::from(upload.offset));
            if let Some(exp) = expires(&upload) {
                resp.headers_mut().insert("upload-expires", exp);
            }
            tus(resp)
        }
        Err(e) => tus_error(e),
    }
}

/// `DELETE /v1/files/{id}`: removes an upload or a file (tus termination), for its owner.
#[utoipa::path(delete, path = "/v1/files/{file_id}", tag = "files", security(("bearer" = [])),
    params(("file_id" = String, Path, description = "The upload or file"), ("Tus-Resumable" = String, Header, description = "1.0.0")),
    responses((status = 204, description = "Removed"), (status = 401, body = ErrorBody), (status = 404, body = ErrorBody),
        (status = 412, body = ErrorBody), (status = 423, body = ErrorBody)))]
pub(super) async fn terminate(
    State(s): State<ApiState>,
    Caller(caller): Caller,
    PathParams(id): PathParams<String>,
    headers: HeaderMap,
) -> Response {
    if let Some(resp) = version_refusal(&headers) {
        return resp;
    }
    let result = async {
        let upload = s.files.owned(caller.user_id, &id).await?;
        s.files.terminate(&upload).await
    }
    .await;
    match result {
        Ok(()) => tus(StatusCode::NO_CONTENT.into_response()),
        Err(e) => tus_error(e),
    }
}

/// The file a caller may read, or `not_found` — for a file that does not exist, is incomplete,
/// or is not the caller's to read alike.
async fn readable(s: &ApiState, id: &str, headers: &HeaderMap, token: Option<&str>) -> Result<FileRecord, Error> {
    let missing = || Error::not_found("no such file");
    let file = s.files.record(id).await?.filter(FileRecord::complete).ok_or_else(missing)?;
    if let Some(token) = token {
        return match s.logic.auth().verify_file(token, id) {
            Ok(()) => Ok(file),
            Err(_) => Err(missing()),
        };
    }
    let user = match headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
    {
        Some(t) => s.logic.authenticate_user(t.trim()).await.ok().map(|i| i.user_id),
        None => None,
    };
    if s.logic.may_read_file(user, &file).await? { Ok(file) } else { Err(missing()) }
}

/// A single byte range of `size` bytes from a `Range` header: `Some(Ok(range))`, `Some(Err(()))`
/// when unsatisfiable, `None` to send the whole file (no header, several ranges, or another unit).
fn byte_range(headers: &HeaderMap, size: u64) -> Option<Result<(u64, u64), ()>> {
    let spec = header_str(headers, "range")?.trim().strip_prefix("bytes=")?;
    if spec.contains(',') {
        return None;
    }
    let (first, last) = spec.split_once('-')?;
    let (first, last) = (first.trim(), last.trim());
    let range = if first.is_empty() {
        let n: u64 = last.parse().ok()?;
        if n == 0 || size == 0 {
            return Some(Err(()));
        }
        (size.saturating_sub(n), size)
    } else {
        let start: u64 = first.parse().ok()?;
        let end = if last.is_empty() { size } else { last.parse::<u64>().ok()?.saturating_add(1).min(size) };
        if start >= size || end <= start {
            return Some(Err(()));
        }
        (start, end)
    };
    Some(Ok(range))
}

/// `Content-Disposition` for a file: inline only for images and audio the browser shows
/// safely, an attachment for everything else (HTML, SVG, scripts never render on this origin).
fn disposition(file: &FileRecord) -> HeaderValue {
    let kind = if media::inline_image(&file.mime) || media::inline_audio(&file.mime) { "inline" } else { "attachment" };
    let name = if file.name.is_empty() { file.id.as_str() } else { file.name.as_str() };
    let ascii: String =
        name.chars().map(|c| if c.is_ascii_alphanumeric() || "._- ".contains(c) { c } else { '_' }).collect();
    let encoded: String = name
        .bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"._-".contains(&b) { (b as char).to_string() } else { format!("%{b:02X}") }
        })
        .collect();
    HeaderValue::from_str(&format!("{kind}; filename=\"{ascii}\"; filename*=UTF-8''{encoded}"))
        .unwrap_or(HeaderValue::from_static("attachment"))
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct DownloadQuery {
    token: Option<String>,
    thumb: Option<bool>,
}

/// `GET /v1/files/{id}`: the file's bytes, for whoever may read it.
#[utoipa::path(get, path = "/v1/files/{file_id}", tag = "files", security(("bearer" = [])),
    params(("file_id" = String, Path, description = "The file"), ("token" = Option<String>, Query, description = "A signed URL's token instead of the Authorization header"),
        ("thumb" = Option<bool>, Query, description = "The image's thumbnail (a JPEG of at most 320 pixels a side) instead of the file; 404 when it has none")),
    responses((status = 200, description = "The bytes", content_type = "application/octet-stream"), (status = 206, description = "The requested range"),
        (status = 304, description = "Unchanged (If-None-Match)"), (status = 404, description = "No such file, or not the caller's to read", body = ErrorBody),
        (status = 416, description = "The range is outside the file"), (status = 400, body = ErrorBody)))]
pub(super) async fn download(
    State(s): State<ApiState>,
    PathParams(id): PathParams<String>,
    super::QueryParams(q): super::QueryParams<DownloadQuery>,
    headers: HeaderMap,
) -> Result<Response, Error> {
    let file = readable(&s, &id, &headers, q.token.as_deref()).await?;
    if q.thumb == Some(true) {
        return thumbnail(&s, &file, &headers).await;
    }
    let etag = format!("\"{}\"", file.sha256);
    let mut resp = Response::new(Body::empty());
    let h = resp.headers_mut();
    h.insert(header::ETAG, HeaderValue::from_str(&etag).map_err(|_| Error::not_found("no such file"))?);
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("private, max-age=86400"));
    h.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    h.insert(header::CONTENT_SECURITY_POLICY, HeaderValue::from_static("default-src 'none'; sandbox"));
    h.insert(header::ACCEPT_RANGES, HeaderValue::from_static("bytes"));
    let matches = header_str(&headers, "if-none-match").is_some_and(|v| {
        v.split(',').any(|t| t.trim() == etag || t.trim() == "*" || t.trim().strip_prefix("W/") == Some(&etag))
    });
    if matches {
        *resp.status_mut() = StatusCode::NOT_MODIFIED;
        return Ok(resp);
    }
    let mime = HeaderValue::from_str(&file.mime).unwrap_or(HeaderValue::from_static("application/octet-stream"));
    h.insert(header::CONTENT_TYPE, mime);
    h.insert(header::CONTENT_DISPOSITION, disposition(&file));
    let (start, end) = match byte_range(&headers, file.size) {
        None => (0, file.size),
        Some(Ok(r)) => {
            *resp.status_mut() = StatusCode::PARTIAL_CONTENT;
            let range = format!("bytes {}-{}/{}", r.0, r.1 - 1, file.size);
            resp.headers_mut()
                .insert(header::CONTENT_RANGE, HeaderValue::from_str(&range).unwrap_or(HeaderValue::from_static("")));
            r
        }
        Some(Err(())) => {
            *resp.status_mut() = StatusCode::RANGE_NOT_SATISFIABLE;
            let range = format!("bytes */{}", file.size);
            resp.headers_mut()
                .insert(header::CONTENT_RANGE, HeaderValue::from_str(&range).unwrap_or(HeaderValue::from_static("")));
            return Ok(resp);
        }
    };
    resp.headers_mut().insert(header::CONTENT_LENGTH, HeaderValue::from(end - start));
    *resp.body_mut() = Body::from_stream(s.files.read(&file, start, end));
    Ok(resp)
}

/// Headers every download carries: nothing on this origin is ever run or sniffed.
fn safe_headers(h: &mut HeaderMap, etag: &str) {
    if let Ok(v) = HeaderValue::from_str(etag) {
        h.insert(header::ETAG, v);
    }
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("private, max-age=86400"));
    h.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    h.insert(header::CONTENT_SECURITY_POLICY, HeaderValue::from_static("default-src 'none'; sandbox"));
}

fn etag_matches(headers: &HeaderMap, etag: &str) -> bool {
    header_str(headers, "if-none-match").is_some_and(|v| {
        v.split(',').any(|t| t.trim() == etag || t.trim() == "*" || t.trim().strip_prefix("W/") == Some(etag))
    })
}

/// An image's thumbnail, whole (a few kilobytes).
async fn thumbnail(s: &ApiState, file: &FileRecord, headers: &HeaderMap) -> Result<Response, Error> {
    if file.thumbnail.is_empty() {
        return Err(Error::not_found("this file has no thumbnail"));
    }
    let etag = format!("\"{}\"", file.thumbnail);
    let mut resp = Response::new(Body::empty());
    safe_headers(resp.headers_mut(), &etag);
    if etag_matches(headers, &etag) {
        *resp.status_mut() = StatusCode::NOT_MODIFIED;
        return Ok(resp);
    }
    let bytes = s.files.thumbnail(file).await?;
    resp.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("image/jpeg"));
    resp.headers_mut().insert(header::CONTENT_DISPOSITION, HeaderValue::from_static("inline"));
    *resp.body_mut() = Body::from(bytes);
    Ok(resp)
}

fn info(file: &FileRecord) -> FileInfo {
    FileInfo {
        id: file.id.clone(),
        owner: file.owner,
        name: file.name.clone(),
        size: file.size,
        mime: file.mime.clone(),
        sha256: file.sha256.clone(),
        width: file.width,
        height: file.height,
        public: file.public,
        thumbnail: !file.thumbnail.is_empty(),
        created_at: file.created_at,
    }
}

/// `GET /v1/files/{id}/info`: what the server knows about a file the caller may read.
#[utoipa::path(get, path = "/v1/files/{file_id}/info", tag = "files", security(("bearer" = [])),
    params(("file_id" = String, Path, description = "The file")),
    responses((status = 200, body = FileInfo), (status = 404, body = ErrorBody), (status = 401, body = ErrorBody)))]
pub(super) async fn file_info(
    State(s): State<ApiState>,
    Caller(_): Caller,
    PathParams(id): PathParams<String>,
    headers: HeaderMap,
) -> Result<axum::Json<FileInfo>, Error> {
    Ok(axum::Json(info(&readable(&s, &id, &headers, None).await?)))
}

/// `POST /v1/files/{id}/url`: a download URL that needs no header (for `<img src>`), valid
/// for `files.signed_url_secs`.
#[utoipa::path(post, path = "/v1/files/{file_id}/url", tag = "files", security(("bearer" = [])),
    params(("file_id" = String, Path, description = "The file")),
    responses((status = 200, body = SignedUrl), (status = 404, body = ErrorBody), (status = 401, body = ErrorBody)))]
pub(super) async fn signed_url(
    State(s): State<ApiState>,
    Caller(_): Caller,
    PathParams(id): PathParams<String>,
    headers: HeaderMap,
) -> Result<axum::Json<SignedUrl>, Error> {
    let file = readable(&s, &id, &headers, None).await?;
    let issued = s.logic.auth().issue_file(&file.id, s.files.config().signed_url_secs);
    Ok(axum::Json(SignedUrl {
        url: format!("/v1/files/{}?token={}", file.id, issued.token),
        expires_at: issued.expires_at,
    }))
}

/// `GET /v1/me/stickers`: the caller's custom stickers.
#[utoipa::path(get, path = "/v1/me/stickers", tag = "files", security(("bearer" = [])),
    responses((status = 200, body = Stickers), (status = 401, body = ErrorBody)))]
pub(super) async fn stickers(State(s): State<ApiState>, Caller(caller): Caller) -> Result<axum::Json<Stickers>, Error> {
    Ok(axum::Json(s.logic.stickers(caller.user_id).await?))
}

/// `PUT /v1/me/stickers/{file_id}`: adds an image the caller may read to their stickers.
#[utoipa::path(put, path = "/v1/me/stickers/{file_id}", tag = "files", security(("bearer" = [])),
    params(("file_id" = String, Path, description = "An image file the caller uploaded or received")),
    responses((status = 204, description = "Added (or already there)"), (status = 400, description = "Not an image", body = ErrorBody),
        (status = 404, body = ErrorBody), (status = 409, description = "The collection is full", body = ErrorBody), (status = 401, body = ErrorBody)))]
pub(super) async fn add_sticker(
    State(s): State<ApiState>,
    Caller(caller): Caller,
    PathParams(id): PathParams<String>,
) -> Result<StatusCode, Error> {
    s.logic.add_sticker(caller.user_id, &id).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// `DELETE /v1/me/stickers/{file_id}`.
#[utoipa::path(delete, path = "/v1/me/stickers/{file_id}", tag = "files", security(("bearer" = [])),
    params(("file_id" = String, Path, description = "The sticker's file")),
    responses((status = 204, description = "Removed"), (status = 404, body = ErrorBody), (status = 401, body = ErrorBody)))]
pub(super) async fn remove_sticker(
    State(s): State<ApiState>,
    Caller(caller): Caller,
    PathParams(id): PathParams<String>,
) -> Result<StatusCode, Error> {
    s.logic.remove_sticker(caller.user_id, &id).await?;
    Ok(StatusCode::NO_CONTENT)
}
