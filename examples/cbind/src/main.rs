//! Prints the C library's answer (the end-to-end tests read it).

fn main() {
    println!("{}", cbind::answer());
}
