//! A minimal reader of classic pcap files (what `tcpdump -w` writes): enough to hand
//! tests the captured frames.

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PcapError {
    #[error("not a pcap file (magic {magic:#x})")]
    BadMagic { magic: u32 },
    #[error("pcap file truncated at byte {at}")]
    Truncated { at: usize },
}

/// The frames of a pcap file, in order. A file cut in the middle of its last record
/// (tcpdump killed while writing) yields the complete records before it.
pub fn frames(bytes: &[u8]) -> Result<Vec<Vec<u8>>, PcapError> {
    if bytes.len() < 24 {
        return Err(PcapError::Truncated { at: bytes.len() });
    }
    let magic_le = u32::from_le_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]);
    let le = match magic_le {
        0xa1b2_c3d4 | 0xa1b2_3c4d => true,
        0xd4c3_b2a1 | 0x4d3c_b2a1 => false,
        other => return Err(PcapError::BadMagic { magic: other }),
    };
    let u32_at = |i: usize| {
        let b = [bytes[i], bytes[i + 1], bytes[i + 2], bytes[i + 3]];
        if le {
            u32::from_le_bytes(b)
        } else {
            u32::from_be_bytes(b)
        }
    };
    let mut out = Vec::new();
    let mut at = 24;
    while at + 16 <= bytes.len() {
        let incl = u32_at(at + 8) as usize;
        let start = at + 16;
        if start + incl > bytes.len() {
            break;
        }
        out.push(bytes[start..start + incl].to_vec());
        at = start + incl;
    }
    Ok(out)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn reads_records() {
        let mut f = vec![0xd4, 0xc3, 0xb2, 0xa1];
        f.extend_from_slice(&[0; 20]);
        for frame in [&b"abc"[..], b"de"] {
            f.extend_from_slice(&[0; 8]);
            f.extend_from_slice(&(frame.len() as u32).to_le_bytes());
            f.extend_from_slice(&(frame.len() as u32).to_le_bytes());
            f.extend_from_slice(frame);
        }
        f.extend_from_slice(&[0; 5]); // partial record
        assert_eq!(frames(&f).unwrap(), vec![b"abc".to_vec(), b"de".to_vec()]);
        assert!(matches!(frames(&[0; 30]), Err(PcapError::BadMagic { .. })));
    }
}
