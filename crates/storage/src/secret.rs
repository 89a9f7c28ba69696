//! The secrets the server makes itself: the generated admin key, runtime API keys and their
//! ids, invitation keys, console session tokens. One generator, so their strength is decided
//! once: bytes from the operating system's random source (`getrandom`), written as lowercase
//! hex.

/// Bytes of a generated key or token: 256 bits.
pub const KEY_BYTES: usize = 32;

/// `n` random bytes as `2n` lowercase hex digits; an error when the operating system has no
/// randomness to give.
pub fn random_hex(n: usize) -> std::io::Result<String> {
    let mut b = vec![0u8; n];
    getrandom::fill(&mut b).map_err(|e| std::io::Error::other(e.to_string()))?;
    Ok(hex::encode(b))
}

/// A fresh key or token of [`KEY_BYTES`].
pub fn fresh_key() -> std::io::Result<String> {
    random_hex(KEY_BYTES)
}

#[cfg(test)]
mod test {
    use super::*;

    #[test]
    fn keys_are_hex_of_the_asked_length_and_differ() {
        let (a, b) = (fresh_key().expect("random"), fresh_key().expect("random"));
        assert_eq!(a.len(), 2 * KEY_BYTES);
        assert!(a
            .bytes()
            .all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase()));
        assert_ne!(a, b);
        assert_eq!(random_hex(6).expect("random").len(), 12);
    }
}
