//! Files: what the server knows about an uploaded file, and signed download URLs.

use serde::{Deserialize, Serialize};

use crate::ids::UserId;

/// A complete file (`GET /v1/files/{id}/info`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct FileInfo {
    /// The file's id (what messages name).
    pub id: String,
    /// Who uploaded it.
    pub owner: UserId,
    /// The name the uploader gave, or empty.
    pub name: String,
    /// Bytes.
    pub size: u64,
    /// The content type, found from the bytes.
    pub mime: String,
    /// SHA-256 of the bytes, lowercase hex (also the download's ETag).
    pub sha256: String,
    /// Pixels, for images shown inline.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub width: Option<u32>,
    /// Pixels, for images shown inline.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub height: Option<u32>,
    /// Anyone may download it.
    pub public: bool,
    /// A thumbnail can be downloaded (`GET /v1/files/{id}?thumb=true`).
    #[serde(default)]
    pub thumbnail: bool,
    /// Upload time, ms since the Unix epoch.
    pub created_at: u64,
}

/// A download URL that needs no header, for `<img src>` and the like.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct SignedUrl {
    /// The path and query to fetch (`/v1/files/{id}?token=…`).
    pub url: String,
    /// When it stops working, seconds since the Unix epoch.
    pub expires_at: u64,
}

/// A custom sticker in the caller's collection.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct StickerItem {
    /// Its image file (send it as `{"type":"sticker","file_id":…}`).
    pub file_id: String,
    /// Pixels.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub width: Option<u32>,
    /// Pixels.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub height: Option<u32>,
    /// When it was added, ms since the Unix epoch.
    pub added_at: u64,
}

/// The caller's custom stickers (`GET /v1/me/stickers`), oldest first.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Stickers {
    /// The stickers.
    pub stickers: Vec<StickerItem>,
}
