//! Wire helpers for zstd-encoded bodies (between nodes, and from the gateway to clients that
//! accept it).

/// Whether the request accepts a zstd-encoded body.
pub fn accepts_zstd(headers: &http::HeaderMap) -> bool {
    headers
        .get_all(http::header::ACCEPT_ENCODING)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|e| {
            let mut it = e.split(';');
            it.next()
                .is_some_and(|n| n.trim().eq_ignore_ascii_case("zstd"))
                && !it.any(|p| p.trim().replace(' ', "") == "q=0")
        })
}

/// zstd-compress a byte stream (level 3: fast, a good ratio on text).
pub fn zstd_stream<S>(
    s: S,
) -> impl futures::Stream<Item = std::io::Result<bytes::Bytes>> + Send + 'static
where
    S: futures::Stream<Item = std::io::Result<bytes::Bytes>> + Send + 'static,
{
    let reader = tokio_util::io::StreamReader::new(s);
    let enc = async_compression::tokio::bufread::ZstdEncoder::with_quality(
        tokio::io::BufReader::new(reader),
        async_compression::Level::Precise(3),
    );
    tokio_util::io::ReaderStream::with_capacity(enc, 256 << 10)
}
