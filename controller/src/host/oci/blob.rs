//! Downloaded blobs: written to a file while their size is capped and their sha256
//! computed; a blob is usable only after [`BlobWriter::finish`] confirmed both.

use std::fs::File;
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

/// Why a blob was rejected.
#[derive(Debug, thiserror::Error)]
pub enum BlobError {
    /// The digest is not `sha256:` followed by 64 lowercase hex digits.
    #[error("blob digest {0:?} is not a sha256 digest (only sha256 is supported)")]
    BadDigest(String),
    /// More bytes arrived than the descriptor declared or the cap allows.
    #[error("blob {digest}: more than {limit} bytes received ({why})")]
    TooLarge {
        /// The blob's digest.
        digest: String,
        /// The limit that was crossed.
        limit: u64,
        /// Which limit.
        why: &'static str,
    },
    /// Fewer bytes arrived than the descriptor declared.
    #[error("blob {digest}: {got} bytes received, the manifest declares {want}")]
    Truncated {
        /// The blob's digest.
        digest: String,
        /// Bytes received.
        got: u64,
        /// Bytes declared.
        want: u64,
    },
    /// The content does not hash to the digest.
    #[error("blob {digest}: content hashes to sha256:{actual}; refusing to use it")]
    DigestMismatch {
        /// The expected digest.
        digest: String,
        /// The hex sha256 of what was received.
        actual: String,
    },
    /// Writing the blob file failed.
    #[error("blob {digest}: write {path}: {source}")]
    Io {
        /// The blob's digest.
        digest: String,
        /// The file.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: io::Error,
    },
}

/// The hex part of a `sha256:<64 hex>` digest.
pub fn sha256_hex(digest: &str) -> Result<&str, BlobError> {
    let hex = digest
        .strip_prefix("sha256:")
        .ok_or_else(|| BlobError::BadDigest(digest.to_string()))?;
    if hex.len() == 64
        && hex
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    {
        Ok(hex)
    } else {
        Err(BlobError::BadDigest(digest.to_string()))
    }
}

/// `sha256:<hex>` of some bytes.
pub fn sha256_digest(bytes: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(bytes)))
}

/// A blob being received into a file: size-capped and hashed as it is written.
#[derive(Debug)]
pub struct BlobWriter {
    digest: String,
    declared: u64,
    cap: u64,
    path: PathBuf,
    file: File,
    hasher: Sha256,
    written: u64,
}

impl BlobWriter {
    /// Creates `path` (truncating a leftover) for the blob `digest` of `declared` bytes,
    /// refusing it up front when `declared` exceeds `cap`.
    pub fn create(path: &Path, digest: &str, declared: u64, cap: u64) -> Result<Self, BlobError> {
        sha256_hex(digest)?;
        if declared > cap {
            return Err(BlobError::TooLarge {
                digest: digest.to_string(),
                limit: cap,
                why: "per-blob size limit",
            });
        }
        let file = File::create(path).map_err(|source| BlobError::Io {
            digest: digest.to_string(),
            path: path.to_path_buf(),
            source,
        })?;
        Ok(BlobWriter {
            digest: digest.to_string(),
            declared,
            cap,
            path: path.to_path_buf(),
            file,
            hasher: Sha256::new(),
            written: 0,
        })
    }

    /// Appends a chunk; fails as soon as the blob grows past its declared size or cap.
    pub fn write_chunk(&mut self, chunk: &[u8]) -> Result<(), BlobError> {
        let after = self.written.saturating_add(chunk.len() as u64);
        if after > self.cap {
            return Err(BlobError::TooLarge {
                digest: self.digest.clone(),
                limit: self.cap,
                why: "per-blob size limit",
            });
        }
        if after > self.declared {
            return Err(BlobError::TooLarge {
                digest: self.digest.clone(),
                limit: self.declared,
                why: "size declared in the manifest",
            });
        }
        self.hasher.update(chunk);
        self.file.write_all(chunk).map_err(|source| BlobError::Io {
            digest: self.digest.clone(),
            path: self.path.clone(),
            source,
        })?;
        self.written = after;
        Ok(())
    }

    /// Checks size and digest; on success the file at the path holds the verified blob.
    pub fn finish(mut self) -> Result<PathBuf, BlobError> {
        if self.written != self.declared {
            return Err(BlobError::Truncated {
                digest: self.digest,
                got: self.written,
                want: self.declared,
            });
        }
        let actual = hex::encode(self.hasher.finalize());
        if Some(actual.as_str()) != self.digest.strip_prefix("sha256:") {
            return Err(BlobError::DigestMismatch {
                digest: self.digest,
                actual,
            });
        }
        self.file.flush().map_err(|source| BlobError::Io {
            digest: self.digest.clone(),
            path: self.path.clone(),
            source,
        })?;
        Ok(self.path)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    #[test]
    fn digests_are_parsed_strictly() {
        let good = sha256_digest(b"hello");
        assert_eq!(sha256_hex(&good).unwrap().len(), 64);
        assert!(sha256_hex("sha512:abcd").is_err());
        assert!(sha256_hex("sha256:ABCD").is_err());
        assert!(sha256_hex(&good.to_uppercase()).is_err());
    }

    #[test]
    fn a_blob_with_the_wrong_digest_is_rejected() {
        let dir = tempfile::tempdir().unwrap();
        let digest = sha256_digest(b"the real content");
        let mut w = BlobWriter::create(&dir.path().join("b"), &digest, 16, 1 << 20).unwrap();
        w.write_chunk(b"the fake content").unwrap();
        let err = w.finish().unwrap_err();
        assert!(matches!(err, BlobError::DigestMismatch { .. }), "{err}");
        assert!(err.to_string().contains(&digest));

        let mut w = BlobWriter::create(&dir.path().join("b"), &digest, 16, 1 << 20).unwrap();
        w.write_chunk(b"the real ").unwrap();
        w.write_chunk(b"content").unwrap();
        let path = w.finish().unwrap();
        assert_eq!(std::fs::read(path).unwrap(), b"the real content");
    }

    #[test]
    fn sizes_are_capped() {
        let dir = tempfile::tempdir().unwrap();
        let digest = sha256_digest(b"x");
        let err = BlobWriter::create(&dir.path().join("b"), &digest, 100, 10).unwrap_err();
        assert!(
            matches!(err, BlobError::TooLarge { limit: 10, .. }),
            "{err}"
        );
        // A registry sending more than declared is cut off at the declared size.
        let mut w = BlobWriter::create(&dir.path().join("b"), &digest, 4, 10).unwrap();
        let err = w.write_chunk(b"12345").unwrap_err();
        assert!(matches!(err, BlobError::TooLarge { limit: 4, .. }), "{err}");
        let mut w = BlobWriter::create(&dir.path().join("b"), &digest, 4, 10).unwrap();
        w.write_chunk(b"12").unwrap();
        assert!(matches!(
            w.finish(),
            Err(BlobError::Truncated { got: 2, .. })
        ));
    }
}
