//! The hash of a function's own tokens: what changes when its code changes, and nothing else.
//!
//! Tokens carry no comments (doc comments aside, which are attributes) and no layout, so the text
//! hashed here is the same whatever the formatting. It is spelled out token by token rather than
//! taken from `TokenStream::to_string`, whose spacing may change between compiler versions.

use proc_macro2::{Delimiter, Spacing, TokenStream, TokenTree};

/// The first 16 hex digits of the blake3 hash of `tokens` written canonically.
pub(crate) fn source_hash(tokens: TokenStream) -> String {
    let mut text = String::new();
    write_canonical(tokens, &mut text);
    let mut hex = blake3::hash(text.as_bytes()).to_hex().to_string();
    hex.truncate(16);
    hex
}

/// One token per word, separated by spaces. Punctuation that is joined to the next character
/// (`&&`, `->`, `::`) stays joined, because `a && b` and `a & &b` mean different things.
pub(crate) fn write_canonical(tokens: TokenStream, text: &mut String) {
    for token in tokens {
        match token {
            TokenTree::Group(group) => {
                let (open, close) = match group.delimiter() {
                    Delimiter::Parenthesis => ("(", ")"),
                    Delimiter::Brace => ("{", "}"),
                    Delimiter::Bracket => ("[", "]"),
                    Delimiter::None => ("\u{2039}", "\u{203a}"),
                };
                text.push_str(open);
                text.push(' ');
                write_canonical(group.stream(), text);
                text.push_str(close);
                text.push(' ');
            }
            TokenTree::Ident(ident) => {
                text.push_str(&ident.to_string());
                text.push(' ');
            }
            TokenTree::Punct(punct) => {
                text.push(punct.as_char());
                if punct.spacing() == Spacing::Alone {
                    text.push(' ');
                }
            }
            TokenTree::Literal(literal) => {
                text.push_str(&literal.to_string());
                text.push(' ');
            }
        }
    }
}
