//! The Redis backend (`redis://[:password@]host:port/db`, feature `remote-redis`): one sync
//! connection per process, keys `memoshelve:ac:<hex key>` and `memoshelve:cas:<blake3 hex>`,
//! written with `SET NX` (write-once). Redis holds whole values, so blobs are read into memory
//! (at most 512 MiB each, Redis's own limit).

use std::io::{self, Write};
use std::sync::{Mutex, MutexGuard};

use super::{CONNECT_TIMEOUT, IO_TIMEOUT, Source};

const PREFIX: &str = "memoshelve:";

pub(super) struct Redis {
    client: redis::Client,
    connection: Mutex<Option<redis::Connection>>,
}

fn to_io(err: redis::RedisError) -> io::Error {
    io::Error::other(err.to_string())
}

impl Redis {
    pub(super) fn open(url: &str) -> Result<Redis, String> {
        let client = redis::Client::open(url)
            .map_err(|err| format!("remote {}: {err}", crate::tier::remote::redact(url)))?;
        Ok(Redis { client, connection: Mutex::new(None) })
    }

    /// Runs one command on the connection, opening it first if needed; a connection that failed
    /// is dropped, so the next command reconnects.
    fn with<R>(
        &self,
        command: impl FnOnce(&mut redis::Connection) -> redis::RedisResult<R>,
    ) -> io::Result<R> {
        let mut slot: MutexGuard<'_, Option<redis::Connection>> =
            self.connection.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        if slot.is_none() {
            let connection =
                self.client.get_connection_with_timeout(CONNECT_TIMEOUT).map_err(to_io)?;
            connection.set_read_timeout(Some(IO_TIMEOUT)).map_err(to_io)?;
            connection.set_write_timeout(Some(IO_TIMEOUT)).map_err(to_io)?;
            *slot = Some(connection);
        }
        let connection = slot.as_mut().expect("connected above");
        command(connection).inspect_err(|_| *slot = None).map_err(to_io)
    }
}

fn redis_key(path: &str) -> String {
    format!("{PREFIX}{}", path.replace('/', ":"))
}

impl super::Backend for Redis {
    fn get(&self, path: &str, sink: &mut dyn Write) -> io::Result<bool> {
        let value: Option<Vec<u8>> =
            self.with(|connection| redis::cmd("GET").arg(redis_key(path)).query(connection))?;
        match value {
            Some(bytes) => {
                sink.write_all(&bytes)?;
                Ok(true)
            }
            None => Ok(false),
        }
    }

    fn exists(&self, path: &str) -> io::Result<bool> {
        self.with(|connection| redis::cmd("EXISTS").arg(redis_key(path)).query(connection))
    }

    fn put(&self, path: &str, source: Source<'_>) -> io::Result<()> {
        let bytes = super::source_bytes(source)?;
        self.with(|connection| {
            redis::cmd("SET")
                .arg(redis_key(path))
                .arg(bytes.as_ref())
                .arg("NX")
                .query::<Option<String>>(connection)
        })?;
        Ok(())
    }

    fn entry_keys(&self) -> io::Result<Vec<String>> {
        let pattern = format!("{PREFIX}ac:*");
        let mut keys = Vec::new();
        let mut cursor: u64 = 0;
        loop {
            let (next, batch): (u64, Vec<String>) = self.with(|connection| {
                redis::cmd("SCAN")
                    .arg(cursor)
                    .arg("MATCH")
                    .arg(&pattern)
                    .arg("COUNT")
                    .arg(1000)
                    .query(connection)
            })?;
            keys.extend(
                batch
                    .iter()
                    .filter_map(|key| key.strip_prefix(&pattern[..pattern.len() - 1]))
                    .map(str::to_owned),
            );
            if next == 0 {
                return Ok(keys);
            }
            cursor = next;
        }
    }

    fn ping(&self) -> io::Result<()> {
        self.with(|connection| redis::cmd("PING").query::<String>(connection)).map(|_| ())
    }
}
