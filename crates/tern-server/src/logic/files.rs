//! Who may read a file, and messages that carry one.
//!
//! A file may be downloaded by its owner; by anyone when it is public (avatars, stickers); and
//! by whoever may read a stored, unrecalled message naming it — the same rule as that
//! conversation's history, so a member removed from a group loses its files with its history.
//! Everyone else is told the file does not exist.

use tern_proto::{Body, ConvId, UserId};

use super::Logic;
use crate::error::Error;
use crate::store::{FileRecord, FileRef};

/// Custom stickers one user may keep.
pub const MAX_STICKERS: usize = 300;

impl Logic {
    /// Whether `user` (`None`: no user — a device token or a signed URL's bearer) may download
    /// `file`.
    pub async fn may_read_file(&self, user: Option<UserId>, file: &FileRecord) -> Result<bool, Error> {
        if file.public || user == Some(file.owner) {
            return Ok(true);
        }
        let Some(user) = user else { return Ok(false) };
        for (conv, seq) in self.store.file_messages(&file.id).await? {
            match self.readable_from(user, conv).await {
                Ok(from) if from <= seq => return Ok(true),
                Ok(_) => {}
                Err(e) if e.code == tern_proto::ErrorCode::NotFound => {}
                Err(e) => return Err(e),
            }
        }
        Ok(false)
    }

    /// Makes `file_id` fit to be `user`'s avatar: it must be an image they uploaded; it becomes
    /// public (anyone who sees the profile may load it, `<img>` tags included).
    pub(super) async fn adopt_avatar(&self, user: UserId, file_id: &str) -> Result<(), Error> {
        let refused = || {
            Error::bad_request(
                "avatar must name an image you uploaded (JPEG, PNG, GIF or WebP): upload it to /v1/files/ first",
            )
        };
        let file = self.store.file(file_id).await?.ok_or_else(refused)?;
        if file.owner != user || !file.complete() || file.width.is_none() {
            return Err(refused());
        }
        if !file.public {
            self.store.put_file(FileRecord { public: true, ..file }).await?;
        }
        Ok(())
    }

    /// Adds an image the user may read (their own, or one they received) to their stickers.
    pub async fn add_sticker(&self, user: UserId, file_id: &str) -> Result<(), Error> {
        let unknown = || Error::not_found(format!("file {file_id} does not exist"));
        let file = self.store.file(file_id).await?.ok_or_else(unknown)?;
        if !file.complete() || !self.may_read_file(Some(user), &file).await? {
            return Err(unknown());
        }
        if file.width.is_none() {
            return Err(Error::bad_request("a sticker is an image (JPEG, PNG, GIF or WebP)"));
        }
        if self.store.stickers(user).await?.len() >= MAX_STICKERS {
            return Err(Error::new(
                tern_proto::ErrorCode::Conflict,
                format!("you have {MAX_STICKERS} stickers, the most one may keep; remove some first"),
            ));
        }
        self.store.add_sticker(user, file_id, crate::clock::now_ms()).await?;
        Ok(())
    }

    /// Removes one of the user's stickers.
    pub async fn remove_sticker(&self, user: UserId, file_id: &str) -> Result<(), Error> {
        if self.store.remove_sticker(user, file_id).await? {
            Ok(())
        } else {
            Err(Error::not_found("no such sticker in your collection"))
        }
    }

    /// The user's stickers.
    pub async fn stickers(&self, user: UserId) -> Result<tern_proto::rest::Stickers, Error> {
        let stickers = self.store.stickers(user).await?;
        Ok(tern_proto::rest::Stickers {
            stickers: stickers
                .into_iter()
                .map(|s| tern_proto::rest::StickerItem {
                    file_id: s.file_id,
                    width: s.width,
                    height: s.height,
                    added_at: s.added_at,
                })
                .collect(),
        })
    }

    /// A message naming a file: the file must be complete and readable by the sender (their
    /// own, or one they received and forward); its size and pixels are filled in from the
    /// record, whatever the client said; and the reference is recorded (it grants the
    /// conversation's members access once the message is stored).
    pub(super) async fn attach_file(
        &self,
        sender: UserId,
        conv: ConvId,
        client_msg_id: &str,
        mut body: Body,
    ) -> Result<Body, Error> {
        let file_id = match &body {
            Body::Image { file_id, .. } | Body::File { file_id, .. } | Body::Voice { file_id, .. } => file_id.clone(),
            Body::Sticker { file_id: Some(file_id), .. } => file_id.clone(),
            _ => return Ok(body),
        };
        let unknown = || Error::not_found(format!("file {file_id} does not exist"));
        let file = self.store.file(&file_id).await?.ok_or_else(unknown)?;
        if !file.complete() || !self.may_read_file(Some(sender), &file).await? {
            return Err(unknown());
        }
        match &mut body {
            Body::Image { width, height, .. } | Body::Sticker { width, height, .. } => {
                let (Some(w), Some(h)) = (file.width, file.height) else {
                    return Err(Error::bad_request(format!(
                        "file {file_id} is {} and not an image tern shows inline (JPEG, PNG, GIF or WebP within {} pixels); send it as a file",
                        file.mime,
                        crate::files::media::MAX_IMAGE_PIXELS
                    )));
                };
                (*width, *height) = (Some(w), Some(h));
            }
            Body::File { size, .. } => *size = file.size,
            _ => {}
        }
        self.store
            .add_file_ref(FileRef { file_id, conv_id: conv, sender, client_msg_id: client_msg_id.to_owned() })
            .await?;
        Ok(body)
    }
}
