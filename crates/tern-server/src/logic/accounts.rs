//! Account rules.

use tern_proto::ErrorCode;

use crate::error::Error;

/// A username is 3–32 characters of letters, digits and `_`, starting with a letter. Unique
/// case-insensitively.
pub fn validate_username(name: &str) -> Result<(), Error> {
    let ok_len = (3..=32).contains(&name.len());
    let ok_chars = name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_');
    let ok_start = name.bytes().next().is_some_and(|b| b.is_ascii_alphabetic());
    if ok_len && ok_chars && ok_start {
        Ok(())
    } else {
        Err(Error::bad_request(
            "username must be 3 to 32 characters of letters, digits and '_', starting with a letter",
        ))
    }
}

const COMMON: &[&str] = &[
    "password",
    "password1",
    "password123",
    "12345678",
    "123456789",
    "1234567890",
    "qwertyuiop",
    "qwerty123",
    "iloveyou",
    "11111111",
    "00000000",
    "abcdefgh",
    "abc12345",
    "letmein1",
    "welcome1",
    "admin123",
    "passw0rd",
    "sunshine",
    "football",
    "baseball",
    "princess",
    "trustno1",
];

/// A password is 8–128 characters, not the username, not one repeated character, not a
/// well-known password.
pub fn validate_password(username: &str, password: &str) -> Result<(), Error> {
    let weak = |why: &str| Err(Error::new(ErrorCode::WeakPassword, why.to_owned()));
    let chars = password.chars().count();
    if chars < 8 {
        return weak("password must be at least 8 characters");
    }
    if chars > 128 {
        return weak("password must be at most 128 characters");
    }
    let lower = password.to_lowercase();
    if lower.contains(&username.to_lowercase()) {
        return weak("password must not contain the username");
    }
    let mut it = password.chars();
    let first = it.next();
    if it.all(|c| Some(c) == first) {
        return weak("password must not be one repeated character");
    }
    if COMMON.contains(&lower.as_str()) {
        return weak("password is too common");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn usernames() {
        for ok in ["bob", "Alice_2", "x23"] {
            assert!(validate_username(ok).is_ok(), "{ok}");
        }
        for bad in ["", "ab", "2bob", "_bob", "bob smith", "bob!", "ä_user", &"a".repeat(33)] {
            assert_eq!(validate_username(bad).unwrap_err().code, ErrorCode::BadRequest, "{bad}");
        }
    }

    #[test]
    fn passwords() {
        assert!(validate_password("bob", "correct horse").is_ok());
        for bad in ["short", "aaaaaaaaaa", "Password1", "xxbobxxyy", &"p".repeat(129)] {
            assert_eq!(validate_password("bob", bad).unwrap_err().code, ErrorCode::WeakPassword, "{bad}");
        }
    }
}
