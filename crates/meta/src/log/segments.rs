//! Segments as files of the backing directory: `atrest.log/<16 hex
//! digits>` (docs/format.md §16.1), through the vault's [`Backing`], so
//! the crash simulator and the real directory run the same code.

use std::io;

use crate::backing::Backing;
use crate::error::{Location, MetaError};

use super::writer::SegmentStore;

/// The directory of the segments.
pub const LOG_DIR: &str = "atrest.log";

/// `atrest.log/<segment>`.
pub fn segment_name(segment: u64) -> String {
    format!("{LOG_DIR}/{segment:016x}")
}

/// The segments of one vault's backing directory.
pub struct BackingSegments<'a> {
    backing: &'a dyn Backing,
}

impl<'a> BackingSegments<'a> {
    pub fn new(backing: &'a dyn Backing) -> Self {
        Self { backing }
    }
}

fn io_error(segment: u64, what: &str) -> impl FnOnce(io::Error) -> MetaError {
    let what = format!("{what} {}", segment_name(segment));
    MetaError::io(what)
}

impl SegmentStore for BackingSegments<'_> {
    fn list(&self) -> Result<Vec<u64>, MetaError> {
        let names = match self.backing.list(LOG_DIR) {
            Ok(names) => names,
            Err(e) if e.kind() == io::ErrorKind::NotFound => Vec::new(),
            Err(e) => return Err(MetaError::io(format!("listing {LOG_DIR}/"))(e)),
        };
        // Anything else in the directory is foreign: `fsck` reports it,
        // replay never reads it.
        let mut numbers: Vec<u64> = names
            .iter()
            .filter(|n| n.len() == 16 && n.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')))
            .filter_map(|n| u64::from_str_radix(n, 16).ok())
            .collect();
        numbers.sort_unstable();
        Ok(numbers)
    }

    fn read(&self, segment: u64) -> Result<Vec<u8>, MetaError> {
        let name = segment_name(segment);
        let len = self
            .backing
            .len(&name)
            .map_err(io_error(segment, "reading"))?
            .ok_or_else(|| MetaError::corrupt(Location::Segment { segment }, "segment missing"))?;
        let len = usize::try_from(len).map_err(|_| {
            MetaError::corrupt(Location::Segment { segment }, "segment larger than memory")
        })?;
        let mut bytes = vec![0u8; len];
        let mut done = 0;
        while done < len {
            let n = self
                .backing
                .read_at(&name, done as u64, &mut bytes[done..])
                .map_err(io_error(segment, "reading"))?;
            if n == 0 {
                // Shrunk while read: what is there is what replay sees.
                bytes.truncate(done);
                break;
            }
            done += n;
        }
        Ok(bytes)
    }

    fn create(&mut self, segment: u64, header: &[u8]) -> Result<(), MetaError> {
        let name = segment_name(segment);
        if self
            .backing
            .len(&name)
            .map_err(io_error(segment, "creating"))?
            .is_some()
        {
            self.backing
                .set_len(&name, 0)
                .map_err(io_error(segment, "creating"))?;
        }
        self.backing
            .write_at(&name, 0, header)
            .map_err(io_error(segment, "creating"))?;
        self.backing
            .sync(&name)
            .map_err(io_error(segment, "syncing"))?;
        self.backing
            .sync_dir(LOG_DIR)
            .map_err(MetaError::io(format!("syncing {LOG_DIR}/")))
    }

    fn write(&mut self, segment: u64, offset: u64, bytes: &[u8]) -> Result<(), MetaError> {
        self.backing
            .write_at(&segment_name(segment), offset, bytes)
            .map_err(io_error(segment, "writing"))
    }

    fn sync(&mut self, segment: u64) -> Result<(), MetaError> {
        self.backing
            .sync(&segment_name(segment))
            .map_err(io_error(segment, "syncing"))
    }

    fn cut(&mut self, segment: u64, len: u64) -> Result<(), MetaError> {
        let name = segment_name(segment);
        self.backing
            .set_len(&name, len)
            .map_err(io_error(segment, "cutting"))?;
        self.backing
            .sync(&name)
            .map_err(io_error(segment, "syncing"))
    }

    fn remove(&mut self, segment: u64) -> Result<(), MetaError> {
        match self.backing.remove(&segment_name(segment)) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(io_error(segment, "removing")(e)),
        }
    }
}
