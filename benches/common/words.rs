//! The word-count benches' input: deterministic text (shared by `jobs` and `floor`).

/// Deterministic text of `size` bytes (words of a small vocabulary, 12 to a line).
pub fn text(seed: usize, size: usize) -> Vec<u8> {
    const V: [&str; 16] = [
        "the",
        "object",
        "store",
        "runs",
        "compute",
        "beside",
        "its",
        "data",
        "and",
        "never",
        "moves",
        "terabytes",
        "across",
        "network",
        "mobula",
        "map",
    ];
    let mut out = Vec::with_capacity(size + 16);
    let mut x = seed as u64 * 2654435761 + 1;
    let mut n = 0;
    while out.len() < size {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        out.extend_from_slice(V[(x % 16) as usize].as_bytes());
        n += 1;
        out.push(if n % 12 == 0 { b'\n' } else { b' ' });
    }
    out
}
