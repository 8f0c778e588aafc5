//! PDFs for the simulator: small real documents for the demo clients, and large ones of any
//! size (a PDF header, deterministic pseudo-random filler, an EOF marker) generated as a
//! stream, so a 1 GiB report costs no memory on the serving side either.

use bytes::Bytes;
use sha2::{Digest, Sha256};

const HEADER: &[u8] = b"%PDF-1.7\n%\xe2\xe3\xcf\xd3\n";
const TRAILER: &[u8] = b"\n%%EOF\n";
pub(crate) const CHUNK: usize = 64 * 1024;

/// A minimal, valid one-page PDF showing `lines` of text.
pub fn statement(lines: &[&str]) -> Vec<u8> {
    let mut text = String::from("BT /F1 12 Tf 72 760 Td 16 TL\n");
    for line in lines {
        let escaped = line
            .replace('\\', "\\\\")
            .replace('(', "\\(")
            .replace(')', "\\)");
        text.push_str(&format!("({escaped}) Tj T*\n"));
    }
    text.push_str("ET");
    let objects = [
        "<< /Type /Catalog /Pages 2 0 R >>".to_owned(),
        "<< /Type /Pages /Kids [3 0 R] /Count 1 >>".to_owned(),
        "<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Contents 4 0 R /Resources << /Font << /F1 5 0 R >> >> >>".to_owned(),
        format!("<< /Length {} >>\nstream\n{}\nendstream", text.len(), text),
        "<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>".to_owned(),
    ];
    let mut out = HEADER.to_vec();
    let mut offsets = Vec::new();
    for (i, obj) in objects.iter().enumerate() {
        offsets.push(out.len());
        out.extend_from_slice(format!("{} 0 obj\n{}\nendobj\n", i + 1, obj).as_bytes());
    }
    let xref = out.len();
    out.extend_from_slice(
        format!("xref\n0 {}\n0000000000 65535 f \n", objects.len() + 1).as_bytes(),
    );
    for off in offsets {
        out.extend_from_slice(format!("{off:010} 00000 n \n").as_bytes());
    }
    out.extend_from_slice(
        format!(
            "trailer\n<< /Size {} /Root 1 0 R >>\nstartxref\n{xref}\n%%EOF\n",
            objects.len() + 1
        )
        .as_bytes(),
    );
    out
}

/// The chunks of a synthetic PDF of exactly `size` bytes (at least header + trailer).
pub fn synthetic(size: u64, seed: u64) -> impl Iterator<Item = Bytes> + Send + 'static {
    let size = size.max((HEADER.len() + TRAILER.len()) as u64);
    let filler = size - (HEADER.len() + TRAILER.len()) as u64;
    let mut state = seed | 1;
    let mut remaining = filler;
    let body = std::iter::from_fn(move || {
        if remaining == 0 {
            return None;
        }
        let n = remaining.min(CHUNK as u64) as usize;
        remaining -= n as u64;
        let mut chunk = Vec::with_capacity(n);
        while chunk.len() < n {
            // xorshift64: fast and deterministic; content only needs to be reproducible.
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            let take = (n - chunk.len()).min(8);
            chunk.extend_from_slice(&state.to_le_bytes()[..take]);
        }
        Some(Bytes::from(chunk))
    });
    std::iter::once(Bytes::from_static(HEADER))
        .chain(body)
        .chain(std::iter::once(Bytes::from_static(TRAILER)))
}

/// SHA-256 (hex) of [`synthetic`] output, for tests to compare with what S3 holds.
pub fn synthetic_sha256(size: u64, seed: u64) -> String {
    let mut h = Sha256::new();
    for chunk in synthetic(size, seed) {
        h.update(&chunk);
    }
    hex::encode(h.finalize())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn synthetic_has_exact_size_and_pdf_magic() {
        for size in [1, 100, 65_536, 1_000_003] {
            let bytes: Vec<u8> = synthetic(size, 7).flat_map(|c| c.to_vec()).collect();
            assert_eq!(
                bytes.len() as u64,
                size.max((HEADER.len() + TRAILER.len()) as u64)
            );
            assert!(bytes.starts_with(b"%PDF-"));
            assert!(bytes.ends_with(b"%%EOF\n"));
        }
    }

    #[test]
    fn statement_is_a_pdf_with_valid_xref_offsets() {
        let pdf = statement(&["Hello (world)"]);
        assert!(pdf.starts_with(b"%PDF-1.7"));
        let text = String::from_utf8_lossy(&pdf);
        let startxref: usize = text
            .rsplit("startxref\n")
            .next()
            .and_then(|s| s.lines().next())
            .and_then(|s| s.parse().ok())
            .expect("startxref");
        assert!(pdf[startxref..].starts_with(b"xref"));
    }
}
