//! A parameter whose type is not `Serialize` joins the key.

use memoshelve_build::memoize;

struct Connection;

#[memoize]
fn fetch(id: u32, connection: &Connection) -> String {
    let _ = connection;
    id.to_string()
}

fn main() {
    fetch(1, &Connection);
}
