//! Reading a journal's write-ahead log (`PATH-wal`) without SQLite, to tell a journal whose
//! main file is only shorter than its header says (a checkpoint cut short, e.g. by a full
//! disk) from one that lost data.
//!
//! Why it is needed: a checkpoint copies the pages of the WAL into the main file in page
//! order, page 1 (whose header records the database size) first. When the file system fills
//! while the file grows, the checkpoint stops with the header already giving the new size
//! and the file short of it. SQLite keeps the WAL until a checkpoint completes, so every
//! page missing from the main file is still in the WAL, and every reader takes it from
//! there: such a journal is whole. The format read here is SQLite's WAL format: a 32-byte
//! header (magic, version, page size, checkpoint sequence, two salts, a checksum), then
//! frames of a 24-byte header (page number, database size for a commit frame, the salts, a
//! cumulative checksum) and one page each.

use std::collections::HashSet;
use std::fs::File;
use std::io::{BufReader, Read};
use std::path::Path;

/// The magic number of a WAL whose checksums read words little-endian (…682) or big-endian
/// (…683).
const MAGIC_LE: u32 = 0x377f_0682;
const MAGIC_BE: u32 = 0x377f_0683;
const HEADER: usize = 32;
const FRAME_HEADER: usize = 24;

/// What the committed transactions of a WAL hold: the database size after the last one, and
/// every page they wrote.
#[derive(Debug, Default, PartialEq, Eq)]
pub(super) struct Committed {
    /// Database size in pages after the last valid commit (0: no commit).
    pub(super) db_pages: u32,
    pages: HashSet<u32>,
}

impl Committed {
    /// True when the last commit is at least `claimed` pages (the size a main file's header
    /// gives: the database never shrinks, so a header written by a checkpoint never gives more
    /// than the WAL's last commit) and every page after the first `whole` ones, up to that
    /// commit's size, is in the WAL: a reader finds the whole database.
    pub(super) fn covers(&self, whole: u64, claimed: u64) -> bool {
        let size = u64::from(self.db_pages);
        size > 0
            && size >= claimed
            && (whole + 1..=size).all(|p| u32::try_from(p).is_ok_and(|p| self.pages.contains(&p)))
    }
}

/// The committed content of the WAL at `wal` for a database of `page_size`, or `None` when
/// there is no readable WAL of that page size (missing, empty, torn header, foreign).
pub(super) fn committed(wal: &Path, page_size: u64) -> Option<Committed> {
    let file = File::open(wal).ok()?;
    let mut r = BufReader::new(file);
    let mut head = [0u8; HEADER];
    r.read_exact(&mut head).ok()?;
    let big_endian = match be32(&head[0..4]) {
        MAGIC_LE => false,
        MAGIC_BE => true,
        _ => return None,
    };
    if u64::from(be32(&head[8..12])) != page_size {
        return None;
    }
    let mut sum = Checksum::default();
    sum.add(&head[..24], big_endian);
    if (sum.s0, sum.s1) != (be32(&head[24..28]), be32(&head[28..32])) {
        return None;
    }
    let frame_len = FRAME_HEADER + usize::try_from(page_size).ok()?;
    Some(read_frames(
        &mut r,
        &head[16..24],
        big_endian,
        sum,
        frame_len,
    ))
}

/// Reads frames until the first one that is torn, of an older generation (other salts) or
/// whose checksum fails; keeps what the last commit among the valid ones holds.
fn read_frames(
    r: &mut impl Read,
    salts: &[u8],
    big_endian: bool,
    mut sum: Checksum,
    frame_len: usize,
) -> Committed {
    let mut out = Committed::default();
    let mut since_commit = Vec::new();
    let mut frame = vec![0u8; frame_len];
    while r.read_exact(&mut frame).is_ok() {
        if &frame[8..16] != salts {
            break;
        }
        sum.add(&frame[..8], big_endian);
        sum.add(&frame[FRAME_HEADER..], big_endian);
        if (sum.s0, sum.s1) != (be32(&frame[16..20]), be32(&frame[20..24])) {
            break;
        }
        since_commit.push(be32(&frame[0..4]));
        let db_size = be32(&frame[4..8]);
        if db_size > 0 {
            out.db_pages = db_size;
            out.pages.extend(since_commit.drain(..));
        }
    }
    out
}

fn be32(b: &[u8]) -> u32 {
    u32::from_be_bytes([b[0], b[1], b[2], b[3]])
}

/// SQLite's WAL checksum, cumulative over the header and every frame.
#[derive(Clone, Copy, Debug, Default)]
struct Checksum {
    s0: u32,
    s1: u32,
}

impl Checksum {
    /// Adds `data` (a multiple of 8 bytes) read as 32-bit words in the WAL's byte order.
    fn add(&mut self, data: &[u8], big_endian: bool) {
        for pair in data.chunks_exact(8) {
            let word = |b: &[u8]| {
                let b = [b[0], b[1], b[2], b[3]];
                if big_endian {
                    u32::from_be_bytes(b)
                } else {
                    u32::from_le_bytes(b)
                }
            };
            self.s0 = self
                .s0
                .wrapping_add(word(&pair[0..4]))
                .wrapping_add(self.s1);
            self.s1 = self
                .s1
                .wrapping_add(word(&pair[4..8]))
                .wrapping_add(self.s0);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rusqlite::Connection;

    /// A database in WAL mode whose commits stay in its WAL (no checkpoint), grown past its
    /// main file, and a second connection keeping the WAL from being folded in at close.
    fn grown_in_wal(dir: &Path) -> (std::path::PathBuf, Connection) {
        let path = dir.join("db");
        let c = Connection::open(&path).unwrap();
        c.pragma_update(None, "journal_mode", "WAL").unwrap();
        c.execute_batch("CREATE TABLE t (x TEXT); INSERT INTO t VALUES ('a');")
            .unwrap();
        c.pragma_update(None, "wal_autocheckpoint", 0).unwrap();
        c.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()))
            .unwrap();
        for _ in 0..20 {
            c.execute("INSERT INTO t VALUES (?1)", [&"x".repeat(3000)])
                .unwrap();
        }
        (path, c)
    }

    #[test]
    fn the_pages_of_committed_frames_are_found() {
        let dir = tempfile::tempdir().unwrap();
        let (path, c) = grown_in_wal(dir.path());
        let main_pages = std::fs::metadata(&path).unwrap().len() / 4096;
        let total: u32 = c
            .pragma_query_value(None, "page_count", |r| r.get(0))
            .unwrap();
        let wal = dir.path().join("db-wal");
        let got = committed(&wal, 4096).unwrap();
        assert_eq!(got.db_pages, total);
        assert!(u64::from(total) > main_pages + 5, "{total} vs {main_pages}");
        assert!(got.covers(main_pages, u64::from(total)));
        // A header giving more pages than the last commit did was not written from this WAL.
        assert!(!got.covers(main_pages, u64::from(total) + 1));
        // Another page size, a torn header, garbage: nothing is trusted.
        assert!(committed(&wal, 1024).is_none());
        let bytes = std::fs::read(&wal).unwrap();
        let torn = dir.path().join("torn-wal");
        std::fs::write(&torn, &bytes[..20]).unwrap();
        assert!(committed(&torn, 4096).is_none());
        let mut flipped = bytes.clone();
        flipped[13] ^= 1;
        std::fs::write(&torn, &flipped).unwrap();
        assert!(committed(&torn, 4096).is_none());
        // A frame whose page was damaged ends what is trusted: the pages after it are lost.
        let mut bad = bytes.clone();
        let frame = FRAME_HEADER + 4096;
        bad[HEADER + 2 * frame + 100] ^= 0xff;
        std::fs::write(&torn, &bad).unwrap();
        let cut = committed(&torn, 4096).unwrap();
        assert!(
            !cut.covers(main_pages, u64::from(total)),
            "{:?}",
            cut.db_pages
        );
        assert!(committed(&dir.path().join("none-wal"), 4096).is_none());
        drop(c);
    }
}
