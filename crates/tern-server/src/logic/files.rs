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
            _ => return Ok(body),
        };
        let unknown = || Error::not_found(format!("file {file_id} does not exist"));
        let file = self.store.file(&file_id).await?.ok_or_else(unknown)?;
        if !file.complete() || !self.may_read_file(Some(sender), &file).await? {
            return Err(unknown());
        }
        match &mut body {
            Body::Image { width, height, .. } => {
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
