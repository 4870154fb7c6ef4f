//! Content-defined chunking shared by both agents.
//!
//! A changed large file travels as a recipe: ranges the agent already has (in the
//! file currently at that path) plus literal bytes. Both sides cut files with the
//! same FastCDC parameters, so an edit only changes the chunks around it.

/// Files smaller than this are always sent whole.
pub const DELTA_MIN_FILE_BYTES: u64 = 256 * 1024;

const MIN: u32 = 8 * 1024;
const AVG: u32 = 32 * 1024;
const MAX: u32 = 128 * 1024;

/// One chunk of a file: where it is, and the blake3 of its bytes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Chunk {
    /// Byte offset in the file.
    pub offset: u64,
    /// Length in bytes.
    pub length: u64,
    /// blake3 of the chunk's bytes.
    pub hash: [u8; 32],
}

/// Cuts `data` into content-defined chunks.
pub fn chunks(data: &[u8]) -> Vec<Chunk> {
    if data.is_empty() {
        return Vec::new();
    }
    fastcdc::v2020::FastCDC::new(data, MIN, AVG, MAX)
        .map(|c| Chunk {
            offset: c.offset as u64,
            length: c.length as u64,
            hash: *blake3::hash(&data[c.offset..c.offset + c.length]).as_bytes(),
        })
        .collect()
}

/// Cuts everything `reader` yields into content-defined chunks, without holding
/// more than one chunk in memory.
pub fn chunks_of_reader(reader: impl std::io::Read) -> std::io::Result<Vec<Chunk>> {
    let mut out = Vec::new();
    for c in fastcdc::v2020::StreamCDC::new(reader, MIN, AVG, MAX) {
        let c = c.map_err(|e| match e {
            fastcdc::v2020::Error::IoError(e) => e,
            other => std::io::Error::other(other.to_string()),
        })?;
        out.push(Chunk {
            offset: c.offset,
            length: c.length as u64,
            hash: *blake3::hash(&c.data).as_bytes(),
        });
    }
    Ok(out)
}

/// One step of a recipe that rebuilds a new file from an old one.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Piece {
    /// Copy `length` bytes at `offset` of the old file.
    Copy {
        /// Offset in the old file.
        offset: u64,
        /// Number of bytes.
        length: u64,
    },
    /// Literal bytes `offset..offset+length` of the new file.
    Literal {
        /// Offset in the new file.
        offset: u64,
        /// Number of bytes.
        length: u64,
    },
}

/// Plans how to build `new` (cut into `new_chunks`) from a file cut into
/// `old_chunks`: chunks the old file has become copies, the rest literals.
/// Adjacent pieces are merged, so an unchanged file is a single copy.
pub fn recipe(old_chunks: &[Chunk], new_chunks: &[Chunk]) -> Vec<Piece> {
    let mut by_hash = std::collections::HashMap::with_capacity(old_chunks.len());
    for c in old_chunks {
        by_hash.entry(c.hash).or_insert((c.offset, c.length));
    }
    let mut pieces: Vec<Piece> = Vec::new();
    for c in new_chunks {
        let next = match by_hash.get(&c.hash) {
            Some(&(offset, length)) if length == c.length => Piece::Copy { offset, length },
            _ => Piece::Literal {
                offset: c.offset,
                length: c.length,
            },
        };
        match (pieces.last_mut(), &next) {
            (
                Some(Piece::Copy { offset, length }),
                Piece::Copy {
                    offset: o2,
                    length: l2,
                },
            ) if *offset + *length == *o2 => *length += l2,
            (
                Some(Piece::Literal { offset, length }),
                Piece::Literal {
                    offset: o2,
                    length: l2,
                },
            ) if *offset + *length == *o2 => *length += l2,
            _ => pieces.push(next),
        }
    }
    pieces
}

#[cfg(test)]
mod tests {
    use super::*;

    fn data(len: usize, seed: u64) -> Vec<u8> {
        let mut x = seed;
        (0..len)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            })
            .collect()
    }

    fn rebuild(old: &[u8], new: &[u8], pieces: &[Piece]) -> Vec<u8> {
        let mut out = Vec::new();
        for p in pieces {
            match *p {
                Piece::Copy { offset, length } => {
                    out.extend_from_slice(&old[offset as usize..(offset + length) as usize])
                }
                Piece::Literal { offset, length } => {
                    out.extend_from_slice(&new[offset as usize..(offset + length) as usize])
                }
            }
        }
        out
    }

    #[test]
    fn a_one_byte_edit_in_a_large_file_sends_about_one_chunk() {
        let old = data(4 << 20, 7);
        let mut new = old.clone();
        new[2_000_000] ^= 0xff;
        let pieces = recipe(&chunks(&old), &chunks(&new));
        let literal: u64 = pieces
            .iter()
            .map(|p| match p {
                Piece::Literal { length, .. } => *length,
                Piece::Copy { .. } => 0,
            })
            .sum();
        assert!(literal <= 2 * MAX as u64, "literal bytes {literal}");
        assert_eq!(rebuild(&old, &new, &pieces), new);
    }

    #[test]
    fn chunking_a_reader_matches_chunking_a_slice() {
        let d = data(1 << 20, 5);
        assert_eq!(chunks_of_reader(&d[..]).unwrap(), chunks(&d));
    }

    #[test]
    fn an_unchanged_file_is_one_copy() {
        let old = data(1 << 20, 3);
        let c = chunks(&old);
        assert_eq!(
            recipe(&c, &c),
            vec![Piece::Copy {
                offset: 0,
                length: old.len() as u64
            }]
        );
    }

    #[test]
    fn an_insertion_keeps_later_chunks() {
        let old = data(2 << 20, 11);
        let mut new = old.clone();
        new.splice(100_000..100_000, b"inserted text".iter().copied());
        let pieces = recipe(&chunks(&old), &chunks(&new));
        assert_eq!(rebuild(&old, &new, &pieces), new);
        let copied: u64 = pieces
            .iter()
            .map(|p| match p {
                Piece::Copy { length, .. } => *length,
                Piece::Literal { .. } => 0,
            })
            .sum();
        assert!(
            copied >= old.len() as u64 - 3 * MAX as u64,
            "copied {copied}"
        );
    }
}
