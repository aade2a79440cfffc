//! Encryption at rest with age (X25519): backups are written to public keys (recipients), so a
//! backup host never holds a secret; reading them back needs one of the matching private keys
//! (identities). The format is the one the `age` command line reads, so an object decrypts by
//! hand with `age -d -i key.txt OBJECT`. Secrets are never logged or shown: only fingerprints.

use std::fmt;
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::str::FromStr as _;
use std::sync::Arc;

use age::secrecy::ExposeSecret as _;
use sha2::{Digest, Sha256};

/// The name of the scheme in manifests.
pub const SCHEME: &str = "age";
/// The first line of every age file.
pub const AGE_MAGIC: &[u8] = b"age-encryption.org/v1\n";

/// A short, stable name of a public key for manifests and messages: `age:` and the first 16
/// hex digits of the SHA-256 of the key's `age1...` text. Not the key: it cannot be used to
/// encrypt, only to tell which key a backup needs.
pub fn fingerprint(recipient: &age::x25519::Recipient) -> String {
    let digest = Sha256::digest(recipient.to_string().as_bytes());
    format!("age:{}", &hex::encode(digest)[..16])
}

/// The public keys new objects are encrypted to.
#[derive(Clone)]
pub struct Recipients {
    keys: Arc<Vec<age::x25519::Recipient>>,
}

impl fmt::Debug for Recipients {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.fingerprints()).finish()
    }
}

impl Recipients {
    /// Parses `age1...` keys, and the lines of a recipients file (one key per line; blank
    /// lines and `#` comments ignored).
    ///
    /// # Errors
    /// A message naming the first key that is not an X25519 age recipient (shortened).
    pub fn parse<'a>(keys: impl IntoIterator<Item = &'a str>) -> Result<Recipients, String> {
        let mut out = Vec::new();
        for key in keys {
            let key = key.trim();
            if key.is_empty() || key.starts_with('#') {
                continue;
            }
            let parsed = age::x25519::Recipient::from_str(key).map_err(|e| {
                format!(
                    "'{}' is not an age recipient (an X25519 public key, age1...): {e}",
                    crate::redact::show(key)
                )
            })?;
            out.push(parsed);
        }
        if out.is_empty() {
            return Err("no recipient: list at least one age1... public key".into());
        }
        Ok(Recipients {
            keys: Arc::new(out),
        })
    }

    /// The keys of a recipients file.
    ///
    /// # Errors
    /// The file cannot be read, or a line is not a recipient.
    pub fn read_file(path: &Path) -> Result<Vec<String>, String> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
        Ok(text.lines().map(str::to_string).collect())
    }

    pub fn fingerprints(&self) -> Vec<String> {
        self.keys.iter().map(fingerprint).collect()
    }

    /// Wraps `out`: what is written is encrypted to every recipient; `Encrypting::finish`
    /// writes the last chunk and returns `out`.
    ///
    /// # Errors
    /// Writing the age header failed.
    pub fn encrypt<W: Write>(&self, out: W) -> io::Result<Encrypting<W>> {
        let encryptor =
            age::Encryptor::with_recipients(self.keys.iter().map(|k| k as &dyn age::Recipient))
                .map_err(|e| io::Error::other(format!("age: {e}")))?;
        Ok(Encrypting(encryptor.wrap_output(out)?))
    }
}

/// An age stream being written.
pub struct Encrypting<W: Write>(age::stream::StreamWriter<W>);

impl<W: Write> Encrypting<W> {
    /// Ends the stream (the last chunk is written, authenticated) and returns the writer.
    ///
    /// # Errors
    /// The writer's error.
    pub fn finish(self) -> io::Result<W> {
        self.0.finish()
    }
}

impl<W: Write> Write for Encrypting<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.write(buf)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.0.flush()
    }
}

/// Why an encrypted object could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum CryptError {
    #[error("cannot read identity file {}", .path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("identity file {} holds no age identity (AGE-SECRET-KEY-1...)", .path.display())]
    NoIdentity { path: PathBuf },
    #[error("line {line} of identity file {} is not an age identity", .path.display())]
    BadIdentity { path: PathBuf, line: usize },
    #[error(
        "none of the identities given ({}) can decrypt it; it was encrypted to {}",
        .given.join(", "),
        .needed.join(", ")
    )]
    NoMatchingKey {
        given: Vec<String>,
        needed: Vec<String>,
    },
    #[error("it is not an age file or its header is damaged")]
    Header(#[source] age::DecryptError),
}

/// Private keys for reading encrypted backups: from identity files in the format `age-keygen`
/// writes (`AGE-SECRET-KEY-1...` lines, `#` comments).
#[derive(Clone)]
pub struct Identities {
    keys: Arc<Vec<age::x25519::Identity>>,
}

impl fmt::Debug for Identities {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.fingerprints()).finish()
    }
}

impl Identities {
    /// Reads every identity of `paths`.
    ///
    /// # Errors
    /// A file that cannot be read, holds no identity, or has a line that is not one (the line
    /// number is named; its content never is).
    pub fn from_files(paths: &[PathBuf]) -> Result<Identities, CryptError> {
        let mut keys = Vec::new();
        for path in paths {
            let text = std::fs::read_to_string(path).map_err(|source| CryptError::Read {
                path: path.clone(),
                source,
            })?;
            let before = keys.len();
            for (n, line) in text.lines().enumerate() {
                let line = line.trim();
                if line.is_empty() || line.starts_with('#') {
                    continue;
                }
                let key =
                    age::x25519::Identity::from_str(line).map_err(|_| CryptError::BadIdentity {
                        path: path.clone(),
                        line: n + 1,
                    })?;
                keys.push(key);
            }
            if keys.len() == before {
                return Err(CryptError::NoIdentity { path: path.clone() });
            }
        }
        Ok(Identities {
            keys: Arc::new(keys),
        })
    }

    /// The fingerprints of the public keys these identities decrypt for.
    pub fn fingerprints(&self) -> Vec<String> {
        self.keys
            .iter()
            .map(|k| fingerprint(&k.to_public()))
            .collect()
    }

    /// Opens an age stream; `needed` (the backup's recipients) is only for the message when no
    /// identity fits.
    ///
    /// # Errors
    /// `NoMatchingKey` or `Header`.
    pub fn decrypt<'r, R: Read + 'r>(
        &self,
        input: R,
        needed: &[String],
    ) -> Result<Box<dyn Read + 'r>, CryptError> {
        let decryptor = age::Decryptor::new(input).map_err(CryptError::Header)?;
        match decryptor.decrypt(self.keys.iter().map(|k| k as &dyn age::Identity)) {
            Ok(reader) => Ok(Box::new(reader)),
            Err(age::DecryptError::NoMatchingKeys) => Err(CryptError::NoMatchingKey {
                given: self.fingerprints(),
                needed: needed.to_vec(),
            }),
            Err(e) => Err(CryptError::Header(e)),
        }
    }
}

/// A new identity and its recipient, as `age-keygen` makes them (tests, and documentation
/// examples). The identity's text is a secret.
pub fn generate() -> (String, String) {
    let identity = age::x25519::Identity::generate();
    let recipient = identity.to_public().to_string();
    (identity.to_string().expose_secret().to_string(), recipient)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn objects_encrypted_to_a_recipient_decrypt_with_its_identity_only() {
        let (secret, public) = generate();
        let (other_secret, _) = generate();
        let dir = tempfile::tempdir().unwrap();
        let key = dir.path().join("key.txt");
        std::fs::write(&key, format!("# created: now\n{secret}\n")).unwrap();
        let wrong = dir.path().join("wrong.txt");
        std::fs::write(&wrong, format!("{other_secret}\n")).unwrap();

        let recipients = Recipients::parse([public.as_str()]).unwrap();
        let mut w = recipients.encrypt(Vec::new()).unwrap();
        w.write_all(b"COPY data\n").unwrap();
        let stored = w.finish().unwrap();
        assert!(stored.starts_with(AGE_MAGIC));
        assert!(!stored.windows(9).any(|w| w == b"COPY data"));

        let ids = Identities::from_files(&[key]).unwrap();
        assert_eq!(ids.fingerprints(), recipients.fingerprints());
        let mut plain = Vec::new();
        ids.decrypt(&stored[..], &recipients.fingerprints())
            .unwrap()
            .read_to_end(&mut plain)
            .unwrap();
        assert_eq!(plain, b"COPY data\n");

        let other = Identities::from_files(&[wrong]).unwrap();
        let Err(e) = other.decrypt(&stored[..], &recipients.fingerprints()) else {
            panic!("the wrong identity decrypted");
        };
        let text = e.to_string();
        assert!(text.contains(&recipients.fingerprints()[0]), "{text}");
        assert!(
            !text.contains(&other_secret) && !text.contains(&public),
            "{text}"
        );
    }

    #[test]
    fn bad_keys_are_named_without_their_content() {
        assert!(Recipients::parse(["age1notakey"]).is_err());
        assert!(Recipients::parse(["# only a comment"]).is_err());
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("k");
        std::fs::write(&f, "AGE-SECRET-KEY-1NOPE\n").unwrap();
        let e = Identities::from_files(&[f]).unwrap_err().to_string();
        assert!(e.contains("line 1") && !e.contains("NOPE"), "{e}");
    }

    #[test]
    fn a_tampered_chunk_fails_to_decrypt() {
        let (secret, public) = generate();
        let dir = tempfile::tempdir().unwrap();
        let key = dir.path().join("key.txt");
        std::fs::write(&key, format!("{secret}\n")).unwrap();
        let recipients = Recipients::parse([public.as_str()]).unwrap();
        let mut w = recipients.encrypt(Vec::new()).unwrap();
        w.write_all(&vec![7u8; 200_000]).unwrap();
        let mut stored = w.finish().unwrap();
        let at = stored.len() - 100;
        stored[at] ^= 1;
        let ids = Identities::from_files(&[key]).unwrap();
        let mut out = Vec::new();
        let e = ids
            .decrypt(&stored[..], &[])
            .unwrap()
            .read_to_end(&mut out)
            .unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::InvalidData, "{e}");
    }
}
