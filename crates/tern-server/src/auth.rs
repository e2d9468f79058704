//! Credentials: password hashing (Argon2id) and login tokens (HS256 JWT).
//!
//! Hashing is deliberately slow and memory-hungry (~19 MiB, tens of ms), so it runs on blocking
//! threads behind a semaphore: a burst of logins queues instead of exhausting memory or starving
//! the runtime.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;

use argon2::Argon2;
use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};
use tern_proto::{DeviceId, UserId};
use tokio::sync::Semaphore;

use crate::clock::now_ms;

const ISSUER: &str = "tern";
const AUDIENCE: &str = "tern-client";
/// The audience of a room join token: never accepted as a login token, nor the reverse.
const ROOM_AUDIENCE: &str = "tern-room";
/// The audience of signed download URLs' tokens.
const FILE_AUDIENCE: &str = "tern-file";

/// The audience of file transfer tickets.
const TRANSFER_AUDIENCE: &str = "tern-transfer";

/// What a file transfer's ticket says: the offer, signed, so any node can check an answer or a
/// relay connection without shared state.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TransferTicket {
    /// The transfer id.
    pub sub: String,
    /// The sender.
    pub from: u64,
    /// The recipient.
    pub to: u64,
    /// The file's name.
    pub name: String,
    /// Bytes.
    pub size: u64,
    /// SHA-256, lowercase hex.
    pub sha256: String,
    iss: String,
    aud: String,
    iat: u64,
    nbf: u64,
    /// Expiry, seconds since the Unix epoch.
    pub exp: u64,
}

/// What a signed download URL's token says.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct FileClaims {
    /// The file.
    sub: String,
    iss: String,
    aud: String,
    iat: u64,
    nbf: u64,
    exp: u64,
}

/// What a room join token says.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct RoomClaims {
    /// The user who may enter.
    sub: String,
    /// The room.
    room: String,
    iss: String,
    aud: String,
    iat: u64,
    nbf: u64,
    exp: u64,
    /// Issued at, ms (compared with the room's `tokens_after_ms`).
    ims: u64,
}

/// Why a token was refused. Callers show one generic message; the variant is for logs.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    /// Past its expiry.
    #[error("token expired")]
    Expired,
    /// Malformed, wrongly signed, wrong algorithm, issuer or audience, or not yet valid.
    #[error("token invalid: {0}")]
    Invalid(String),
    /// Issued before its session was ended (logout, password change, account disabled).
    #[error("session ended")]
    Revoked,
}

/// What a token says.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims {
    /// User id, as a string per RFC 7519.
    pub sub: String,
    /// Device id.
    pub did: String,
    /// Issuer.
    pub iss: String,
    /// Audience.
    pub aud: String,
    /// Issued at (seconds).
    pub iat: u64,
    /// Not before (seconds).
    pub nbf: u64,
    /// Expiry (seconds).
    pub exp: u64,
    /// Issued at, in milliseconds: what session cutoffs compare against (`iat` is too coarse:
    /// a login in the same second as a logout must stay valid). Absent in older tokens.
    #[serde(default)]
    pub ims: u64,
    /// `device` for an anonymous device token; absent for a user token.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub typ: Option<String>,
}

/// What a valid token stands for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Principal {
    /// A logged-in user's device.
    User(Identity),
    /// A device without a user login (live rooms and device pushes only).
    Device(DeviceId),
}

impl Principal {
    /// The device.
    pub fn device_id(&self) -> &DeviceId {
        match self {
            Principal::User(i) => &i.device_id,
            Principal::Device(d) => d,
        }
    }

    /// The user, if logged in.
    pub fn user(&self) -> Option<&Identity> {
        match self {
            Principal::User(i) => Some(i),
            Principal::Device(_) => None,
        }
    }
}

const DEVICE_TYP: &str = "device";

/// An authenticated identity.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    /// The user.
    pub user_id: UserId,
    /// The device.
    pub device_id: DeviceId,
}

/// Issues and verifies tokens, hashes and checks passwords.
pub struct Auth {
    encoding: EncodingKey,
    decoding: DecodingKey,
    validation: Validation,
    ttl_secs: u64,
    hashing: Arc<Semaphore>,
    /// Session cutoffs: a user's tokens (for one device, or `None`: every device) issued at or
    /// before the cutoff (ms) are void. Loaded from the store at start, kept in step with it.
    cutoffs: parking_lot::RwLock<HashMap<(UserId, Option<DeviceId>), u64>>,
}

/// An issued token.
#[derive(Debug, Clone)]
pub struct IssuedToken {
    /// The JWT.
    pub token: String,
    /// Expiry, seconds since the Unix epoch.
    pub expires_at: u64,
}

impl Auth {
    /// Builds from a secret; `ttl_secs` is the token lifetime.
    pub fn new(secret: &[u8], ttl_secs: u64, max_concurrent_hashes: usize) -> Self {
        let mut validation = Validation::new(Algorithm::HS256);
        validation.set_issuer(&[ISSUER]);
        validation.set_audience(&[AUDIENCE]);
        validation.set_required_spec_claims(&["exp", "nbf", "iss", "aud", "sub"]);
        validation.validate_nbf = true;
        validation.leeway = 5;
        Self {
            encoding: EncodingKey::from_secret(secret),
            decoding: DecodingKey::from_secret(secret),
            validation,
            ttl_secs,
            hashing: Arc::new(Semaphore::new(max_concurrent_hashes)),
            cutoffs: parking_lot::RwLock::new(HashMap::new()),
        }
    }

    /// Voids the tokens of `user` (one device, or every device) issued at or before `at_ms`.
    pub fn set_cutoff(&self, user: UserId, device: Option<DeviceId>, at_ms: u64) {
        {
            let mut map = self.cutoffs.write();
            let entry = map.entry((user, device)).or_insert(0);
            *entry = (*entry).max(at_ms);
        }
    }

    fn revoked(&self, identity: &Identity, issued_ms: u64) -> bool {
        let map = self.cutoffs.read();
        let cut = |device: Option<DeviceId>| map.get(&(identity.user_id, device)).is_some_and(|&at| issued_ms <= at);
        cut(None) || cut(Some(identity.device_id.clone()))
    }

    /// Reads the secret from config, else from `<data_dir>/token.secret`, creating it once.
    pub fn load_secret(configured: &str, data_dir: &Path) -> std::io::Result<Vec<u8>> {
        if !configured.is_empty() {
            return Ok(configured.as_bytes().to_vec());
        }
        let path = data_dir.join("token.secret");
        match std::fs::read(&path) {
            Ok(bytes) if bytes.len() >= 32 => return Ok(bytes),
            Ok(_) => {
                return Err(std::io::Error::other(format!("{} is shorter than 32 bytes", path.display())));
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
        std::fs::create_dir_all(data_dir)?;
        let secret: [u8; 32] = rand::random();
        let hex: String = secret.iter().map(|b| format!("{b:02x}")).collect();
        write_private(&path, hex.as_bytes())?;
        Ok(hex.into_bytes())
    }

    /// Issues a token for a user's device.
    pub fn issue(&self, identity: &Identity) -> IssuedToken {
        self.issue_claims(identity.user_id.0.to_string(), &identity.device_id, None, now_ms())
    }

    /// Issues a token marked as issued at `at_ms` (after a cutoff set in the same millisecond).
    pub fn issue_at(&self, identity: &Identity, at_ms: u64) -> IssuedToken {
        self.issue_claims(identity.user_id.0.to_string(), &identity.device_id, None, at_ms)
    }

    /// Issues a token for an anonymous device.
    pub fn issue_device(&self, device_id: &DeviceId) -> IssuedToken {
        self.issue_claims(String::new(), device_id, Some(DEVICE_TYP.into()), now_ms())
    }

    fn issue_claims(&self, sub: String, device_id: &DeviceId, typ: Option<String>, at_ms: u64) -> IssuedToken {
        let now = at_ms / 1000;
        let claims = Claims {
            sub,
            typ,
            did: device_id.0.clone(),
            iss: ISSUER.into(),
            aud: AUDIENCE.into(),
            iat: now,
            nbf: now,
            exp: now + self.ttl_secs,
            ims: at_ms,
        };
        // HS256 signing of a plain struct cannot fail.
        let token = jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &self.encoding).unwrap_or_default();
        IssuedToken { token, expires_at: claims.exp }
    }

    /// Verifies a token: signature, algorithm, expiry, not-before, issuer, audience, and claims.
    pub fn verify(&self, token: &str) -> Result<Principal, TokenError> {
        let data =
            jsonwebtoken::decode::<Claims>(token, &self.decoding, &self.validation).map_err(|e| match e.kind() {
                jsonwebtoken::errors::ErrorKind::ExpiredSignature => TokenError::Expired,
                _ => TokenError::Invalid(e.to_string()),
            })?;
        let device_id = DeviceId::parse(&data.claims.did).map_err(|e| TokenError::Invalid(e.into()))?;
        match data.claims.typ.as_deref() {
            None => {
                let user_id =
                    data.claims.sub.parse::<u64>().map(UserId).map_err(|_| TokenError::Invalid("bad sub".into()))?;
                let identity = Identity { user_id, device_id };
                let issued_ms = if data.claims.ims > 0 { data.claims.ims } else { data.claims.iat * 1000 };
                if self.revoked(&identity, issued_ms) {
                    return Err(TokenError::Revoked);
                }
                Ok(Principal::User(identity))
            }
            Some(DEVICE_TYP) => Ok(Principal::Device(device_id)),
            Some(other) => Err(TokenError::Invalid(format!("unknown token type {other:?}"))),
        }
    }

    /// A token letting `user` enter `room` for `ttl_secs`.
    pub fn issue_room(&self, user: UserId, room: &str, ttl_secs: u64) -> IssuedToken {
        let at_ms = now_ms();
        let now = at_ms / 1000;
        let claims = RoomClaims {
            sub: user.0.to_string(),
            room: room.to_owned(),
            iss: ISSUER.into(),
            aud: ROOM_AUDIENCE.into(),
            iat: now,
            nbf: now,
            exp: now + ttl_secs,
            ims: at_ms,
        };
        let token = jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &self.encoding).unwrap_or_default();
        IssuedToken { token, expires_at: claims.exp }
    }

    /// A token for a signed download URL of `file`, valid `ttl_secs`.
    pub fn issue_file(&self, file: &str, ttl_secs: u64) -> IssuedToken {
        let now = now_ms() / 1000;
        let claims = FileClaims {
            sub: file.to_owned(),
            iss: ISSUER.into(),
            aud: FILE_AUDIENCE.into(),
            iat: now,
            nbf: now,
            exp: now + ttl_secs,
        };
        let token = jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &self.encoding).unwrap_or_default();
        IssuedToken { token, expires_at: claims.exp }
    }

    /// Checks a signed download URL's token for `file`.
    pub fn verify_file(&self, token: &str, file: &str) -> Result<(), TokenError> {
        let mut validation = self.validation.clone();
        validation.set_audience(&[FILE_AUDIENCE]);
        validation.leeway = 1;
        let data =
            jsonwebtoken::decode::<FileClaims>(token, &self.decoding, &validation).map_err(|e| match e.kind() {
                jsonwebtoken::errors::ErrorKind::ExpiredSignature => TokenError::Expired,
                _ => TokenError::Invalid(e.to_string()),
            })?;
        if data.claims.sub != file {
            return Err(TokenError::Invalid("the token is for another file".into()));
        }
        Ok(())
    }

    /// A transfer ticket, valid `ttl_secs`.
    #[allow(clippy::too_many_arguments, reason = "the fields of one offer")]
    pub fn issue_transfer(
        &self,
        id: &str,
        from: UserId,
        to: UserId,
        name: &str,
        size: u64,
        sha256: &str,
        ttl_secs: u64,
    ) -> (String, TransferTicket) {
        let now = now_ms() / 1000;
        let claims = TransferTicket {
            sub: id.to_owned(),
            from: from.0,
            to: to.0,
            name: name.to_owned(),
            size,
            sha256: sha256.to_owned(),
            iss: ISSUER.into(),
            aud: TRANSFER_AUDIENCE.into(),
            iat: now,
            nbf: now,
            exp: now + ttl_secs,
        };
        let token = jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &self.encoding).unwrap_or_default();
        (token, claims)
    }

    /// Checks a transfer ticket.
    pub fn verify_transfer(&self, ticket: &str) -> Result<TransferTicket, TokenError> {
        let mut validation = self.validation.clone();
        validation.set_audience(&[TRANSFER_AUDIENCE]);
        validation.leeway = 1;
        jsonwebtoken::decode::<TransferTicket>(ticket, &self.decoding, &validation).map(|d| d.claims).map_err(|e| {
            match e.kind() {
                jsonwebtoken::errors::ErrorKind::ExpiredSignature => TokenError::Expired,
                _ => TokenError::Invalid(e.to_string()),
            }
        })
    }

    /// Checks a room join token for `user` and `room`; returns when it was issued (ms).
    pub fn verify_room(&self, token: &str, user: UserId, room: &str) -> Result<u64, TokenError> {
        let mut validation = self.validation.clone();
        validation.set_audience(&[ROOM_AUDIENCE]);
        // Room tokens live minutes, not a day: a second of skew between nodes, not five.
        validation.leeway = 1;
        let data =
            jsonwebtoken::decode::<RoomClaims>(token, &self.decoding, &validation).map_err(|e| match e.kind() {
                jsonwebtoken::errors::ErrorKind::ExpiredSignature => TokenError::Expired,
                _ => TokenError::Invalid(e.to_string()),
            })?;
        if data.claims.sub != user.0.to_string() || data.claims.room != room {
            return Err(TokenError::Invalid("the token is for another user or room".into()));
        }
        Ok(data.claims.ims)
    }

    /// Hashes a password with Argon2id and a random salt.
    pub async fn hash_password(&self, password: String) -> Result<String, String> {
        let _permit = self.hashing.acquire().await.map_err(|e| e.to_string())?;
        tokio::task::spawn_blocking(move || {
            let salt_bytes: [u8; 16] = rand::random();
            let salt = SaltString::encode_b64(&salt_bytes).map_err(|e| e.to_string())?;
            Argon2::default()
                .hash_password(password.as_bytes(), &salt)
                .map(|h| h.to_string())
                .map_err(|e| e.to_string())
        })
        .await
        .map_err(|e| e.to_string())?
    }

    /// Checks a password against a stored hash (constant-time compare inside argon2).
    pub async fn verify_password(&self, password: String, hash: String) -> bool {
        let Ok(_permit) = self.hashing.acquire().await else {
            return false;
        };
        tokio::task::spawn_blocking(move || {
            PasswordHash::new(&hash)
                .map(|parsed| Argon2::default().verify_password(password.as_bytes(), &parsed).is_ok())
                .unwrap_or(false)
        })
        .await
        .unwrap_or(false)
    }
}

fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(0o600);
    }
    opts.open(path)?.write_all(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn auth() -> Auth {
        Auth::new(&[7u8; 32], 3600, 2)
    }

    fn id() -> Identity {
        Identity { user_id: UserId(42), device_id: DeviceId("phone".into()) }
    }

    #[test]
    fn issued_tokens_verify() {
        let a = auth();
        assert_eq!(a.verify(&a.issue(&id()).token), Ok(Principal::User(id())));
        let dev = DeviceId("d_1234".into());
        assert_eq!(a.verify(&a.issue_device(&dev).token), Ok(Principal::Device(dev)));
    }

    #[test]
    fn foreign_tampered_and_expired_tokens_are_refused() {
        let a = auth();
        let other = Auth::new(&[8u8; 32], 3600, 2);
        assert!(matches!(a.verify(&other.issue(&id()).token), Err(TokenError::Invalid(_))));

        // Swap the payload for one claiming another user, keeping the signature.
        let token = a.issue(&id()).token;
        let parts: Vec<&str> = token.split('.').collect();
        let forged = a.issue(&Identity { user_id: UserId(1), device_id: DeviceId("phone".into()) }).token;
        let forged_payload = forged.split('.').nth(1).unwrap();
        let tampered = format!("{}.{}.{}", parts[0], forged_payload.replace('E', "F"), parts[2]);
        assert!(a.verify(&tampered).is_err());

        let now = now_ms() / 1000;
        let stale = Claims {
            sub: "42".into(),
            did: "phone".into(),
            iss: ISSUER.into(),
            aud: AUDIENCE.into(),
            iat: now - 7200,
            nbf: now - 7200,
            exp: now - 3600,
            typ: None,
            ims: 0,
        };
        let expired = jsonwebtoken::encode(&Header::new(Algorithm::HS256), &stale, &a.encoding).unwrap();
        assert_eq!(a.verify(&expired), Err(TokenError::Expired));
        assert!(a.verify("not.a.token").is_err());
        assert!(a.verify("").is_err());
    }

    #[test]
    fn cutoffs_void_earlier_tokens_of_one_device_or_all() {
        let a = auth();
        let t = now_ms();
        let phone = id();
        let laptop = Identity { device_id: DeviceId::parse("laptop").unwrap(), ..id() };
        let (old_phone, old_laptop) = (a.issue_at(&phone, t + 1_000), a.issue_at(&laptop, t + 1_000));
        a.set_cutoff(phone.user_id, Some(phone.device_id.clone()), t + 1_000);
        assert_eq!(a.verify(&old_phone.token), Err(TokenError::Revoked));
        assert_eq!(a.verify(&old_laptop.token), Ok(Principal::User(laptop.clone())), "other devices keep theirs");
        assert_eq!(
            a.verify(&a.issue_at(&phone, t + 1_001).token),
            Ok(Principal::User(phone.clone())),
            "a later login works"
        );
        a.set_cutoff(phone.user_id, None, t + 2_000);
        assert_eq!(a.verify(&old_laptop.token), Err(TokenError::Revoked));
        assert_eq!(
            a.verify(&a.issue_at(&laptop, t + 2_000).token),
            Err(TokenError::Revoked),
            "at the cutoff is before it"
        );
        assert!(a.verify(&a.issue_at(&laptop, t + 2_001).token).is_ok());
        // A cutoff never moves back.
        a.set_cutoff(phone.user_id, None, t + 1_500);
        assert_eq!(a.verify(&a.issue_at(&laptop, t + 1_999).token), Err(TokenError::Revoked));
    }

    #[tokio::test]
    async fn passwords_hash_and_verify() {
        let a = auth();
        let h = a.hash_password("correct horse".into()).await.unwrap();
        assert!(h.starts_with("$argon2id$"));
        assert!(a.verify_password("correct horse".into(), h.clone()).await);
        assert!(!a.verify_password("wrong horse".into(), h).await);
    }
}
