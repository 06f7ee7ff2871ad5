//! The log of a format 2 vault (docs/format.md §16.12): segments of
//! records, each body sealed with the log key and every record chained to
//! the one before it by a keyless SHA-256 hash.
//!
//! [`frame`] encodes and parses the fixed record header and the segment
//! header, [`body`] the record bodies, [`writer`] appends (group commit)
//! and rotates segments, [`group`] shares flushes across threads,
//! [`reader`] replays the durable prefix, [`segments`] keeps them as
//! files of the backing directory.

pub mod body;
pub mod frame;
pub mod group;
pub mod reader;
pub mod segments;
pub mod writer;

#[cfg(test)]
mod tests;

pub use body::{Body, EntryChange, Kind};
pub use frame::{
    FrameHeader, MAX_BODY, MAX_PAYLOAD, RECORD_HEADER_LEN, SEGMENT_HEADER_LEN, SegmentHeader, aad,
    chain_genesis, chain_next,
};
pub use group::GroupCommit;
pub use reader::{Replay, ReplayEnd, Replayed, Start, replay, replay_with};
pub use segments::{BackingSegments, LOG_DIR, segment_name};
pub use writer::{Flush, LogWriter, MemSegments, SEGMENT_SIZE, SegmentStore, ZEROS_AHEAD};
