//! What a call reports: where a value came from ([`Status`]) and which events to log ([`Log`]).

use std::fmt;
use std::ops::BitOr;

/// Where a value came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Status {
    /// The process-wide memory tier.
    Memory,
    /// The disk tier (the value was decoded and checked).
    Disk,
    /// The remote tier: fetched, checked, and written to the disk tier on the way.
    Remote,
    /// Not cached: the function ran.
    Miss,
}

impl Status {
    /// Whether the value came from a cache tier.
    pub fn is_hit(self) -> bool {
        !matches!(self, Status::Miss)
    }
}

impl fmt::Display for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // `pad` honours width and alignment, so statuses line up in tables.
        f.pad(match self {
            Status::Memory => "cached (mem)",
            Status::Disk => "cached (disk)",
            Status::Remote => "cached (remote)",
            Status::Miss => "miss",
        })
    }
}

/// Which cache events to report: as `cargo:warning=` lines in a build script, through the `log`
/// crate elsewhere. Combine with `|`. The environment variable `MEMOSHELVE_LOG` overrides it, with
/// a comma-separated list of `none`, `mem`, `disk`, `remote`, `hits`, `misses`, `all`.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Log(u8);

impl Log {
    /// Report nothing (the default).
    pub const NONE: Log = Log(0);
    /// Hits from the memory tier.
    pub const MEMORY_HITS: Log = Log(1);
    /// Hits from the disk tier.
    pub const DISK_HITS: Log = Log(2);
    /// Hits from the remote tier.
    pub const REMOTE_HITS: Log = Log(8);
    /// Hits from any tier.
    pub const HITS: Log = Log(1 | 2 | 8);
    /// Misses (the function ran), with how long it took.
    pub const MISSES: Log = Log(4);
    /// Everything.
    pub const ALL: Log = Log(1 | 2 | 4 | 8);

    /// Whether every event of `other` is reported.
    pub fn contains(self, other: Log) -> bool {
        self.0 & other.0 == other.0
    }

    pub(crate) fn includes(self, status: Status) -> bool {
        match status {
            Status::Memory => self.contains(Log::MEMORY_HITS),
            Status::Disk => self.contains(Log::DISK_HITS),
            Status::Remote => self.contains(Log::REMOTE_HITS),
            Status::Miss => self.contains(Log::MISSES),
        }
    }

    /// Parses the `MEMOSHELVE_LOG` syntax; `None` for an unknown word.
    pub fn parse(text: &str) -> Option<Log> {
        let mut log = Log::NONE;
        for word in text.split(',').map(str::trim).filter(|word| !word.is_empty()) {
            log = log
                | match word.to_ascii_lowercase().as_str() {
                    "none" | "0" | "off" => Log::NONE,
                    "mem" | "memory" => Log::MEMORY_HITS,
                    "disk" => Log::DISK_HITS,
                    "remote" => Log::REMOTE_HITS,
                    "hits" | "hit" => Log::HITS,
                    "misses" | "miss" => Log::MISSES,
                    "all" | "1" | "on" => Log::ALL,
                    _ => return None,
                };
        }
        Some(log)
    }
}

impl BitOr for Log {
    type Output = Log;
    fn bitor(self, other: Log) -> Log {
        Log(self.0 | other.0)
    }
}

impl fmt::Debug for Log {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let words: Vec<&str> = [
            (Log::MEMORY_HITS, "mem"),
            (Log::DISK_HITS, "disk"),
            (Log::REMOTE_HITS, "remote"),
            (Log::MISSES, "misses"),
        ]
        .into_iter()
        .filter(|(flag, _)| self.contains(*flag))
        .map(|(_, word)| word)
        .collect();
        write!(f, "Log({})", if words.is_empty() { "none".to_owned() } else { words.join(",") })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_parses_the_env_syntax() {
        assert_eq!(Log::parse("all"), Some(Log::ALL));
        assert_eq!(Log::parse("mem, misses"), Some(Log::MEMORY_HITS | Log::MISSES));
        assert_eq!(Log::parse("hits"), Some(Log::HITS));
        assert_eq!(Log::parse(""), Some(Log::NONE));
        assert_eq!(Log::parse("loud"), None);
        assert!(Log::HITS.includes(Status::Disk) && !Log::HITS.includes(Status::Miss));
        assert_eq!(format!("{:?}", Log::DISK_HITS | Log::MISSES), "Log(disk,misses)");
        assert_eq!(format!("[{:<14}]", Status::Memory), "[cached (mem)  ]");
    }
}
