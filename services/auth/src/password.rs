//! Password hashing with Argon2id. Hashes live only in the private `credentials` table.
//!
//! Hashing is deliberately expensive, so it runs on the blocking pool and at most
//! `hash_concurrency` at a time (each one holds `m_kib` of memory). A login for an unknown user
//! verifies against a dummy hash, so it takes as long as a wrong password.

use std::sync::Arc;

use argon2::{
    password_hash::{PasswordHash, PasswordHasher as _, PasswordVerifier as _, SaltString},
    Algorithm, Argon2, Params, Version,
};
use ring::rand::{SecureRandom, SystemRandom};
use tokio::sync::Semaphore;

#[derive(Debug, thiserror::Error)]
pub enum HashError {
    #[error("invalid Argon2 parameters: {0}")]
    Params(String),
    #[error("hashing failed: {0}")]
    Hash(String),
    #[error("no randomness available")]
    Random,
    #[error("the hashing pool is gone")]
    Closed,
}

/// Hashes and verifies passwords with fixed Argon2id parameters.
#[derive(Clone)]
pub struct Hasher {
    params: Params,
    permits: Arc<Semaphore>,
    dummy: Arc<String>,
}

impl Hasher {
    pub fn new(m_kib: u32, t: u32, p: u32, concurrency: usize) -> Result<Self, HashError> {
        let params = Params::new(m_kib, t, p, None).map_err(|e| HashError::Params(e.to_string()))?;
        let mut hasher =
            Self { params, permits: Arc::new(Semaphore::new(concurrency.max(1))), dummy: Arc::new(String::new()) };
        let mut random = [0u8; 16];
        SystemRandom::new().fill(&mut random).map_err(|_| HashError::Random)?;
        hasher.dummy = Arc::new(hasher.hash_now(&format!("{random:?}"))?);
        Ok(hasher)
    }

    fn argon2(&self) -> Argon2<'static> {
        Argon2::new(Algorithm::Argon2id, Version::V0x13, self.params.clone())
    }

    fn hash_now(&self, password: &str) -> Result<String, HashError> {
        let mut salt = [0u8; 16];
        SystemRandom::new().fill(&mut salt).map_err(|_| HashError::Random)?;
        let salt = SaltString::encode_b64(&salt).map_err(|e| HashError::Hash(e.to_string()))?;
        let hash =
            self.argon2().hash_password(password.as_bytes(), &salt).map_err(|e| HashError::Hash(e.to_string()))?;
        Ok(hash.to_string())
    }

    /// The PHC string of a new hash of `password`.
    pub async fn hash(&self, password: String) -> Result<String, HashError> {
        let _permit = self.permits.acquire().await.map_err(|_| HashError::Closed)?;
        let this = self.clone();
        tokio::task::spawn_blocking(move || this.hash_now(&password))
            .await
            .map_err(|e| HashError::Hash(e.to_string()))?
    }

    /// Whether `password` matches `phc`; with `None` (no such user) it checks a dummy hash and says no.
    pub async fn verify(&self, password: String, phc: Option<String>) -> Result<bool, HashError> {
        let _permit = self.permits.acquire().await.map_err(|_| HashError::Closed)?;
        let this = self.clone();
        tokio::task::spawn_blocking(move || {
            let real = phc.is_some();
            let phc = phc.unwrap_or_else(|| this.dummy.as_ref().clone());
            let Ok(parsed) = PasswordHash::new(&phc) else { return false };
            let ok = this.argon2().verify_password(password.as_bytes(), &parsed).is_ok();
            ok && real
        })
        .await
        .map_err(|e| HashError::Hash(e.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn verifies_only_the_right_password() {
        let hasher = Hasher::new(1024, 1, 1, 2).unwrap();
        let phc = hasher.hash("correct horse".into()).await.unwrap();
        assert!(phc.starts_with("$argon2id$v=19$m=1024,t=1,p=1$"), "{phc}");
        assert!(hasher.verify("correct horse".into(), Some(phc.clone())).await.unwrap());
        assert!(!hasher.verify("wrong".into(), Some(phc)).await.unwrap());
        assert!(!hasher.verify("anything".into(), None).await.unwrap());
    }
}

#[cfg(test)]
mod timing {
    use super::*;

    #[tokio::test]
    #[ignore = "a measurement, run with --release --ignored --nocapture"]
    async fn unknown_users_cost_what_wrong_passwords_cost() {
        let hasher = Hasher::new(19_456, 2, 1, 1).unwrap();
        let phc = hasher.hash("right".into()).await.unwrap();
        for _ in 0..3 {
            let t = std::time::Instant::now();
            for _ in 0..10 {
                hasher.verify("wrong".into(), Some(phc.clone())).await.unwrap();
            }
            let wrong = t.elapsed();
            let t = std::time::Instant::now();
            for _ in 0..10 {
                hasher.verify("wrong".into(), None).await.unwrap();
            }
            println!("wrong password {:?}, unknown user {:?}", wrong / 10, t.elapsed() / 10);
        }
    }
}
