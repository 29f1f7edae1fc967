//! The arguments of `#[memoize(..)]`, parsed and checked.

use proc_macro2::TokenStream;
use syn::parse::Parser;
use syn::{Expr, Ident, LitBool, LitStr};

/// The words `Log::parse` (memoshelve-build's `MEMOSHELVE_LOG` syntax) accepts.
const LOG_WORDS: &[&str] = &[
    "none", "0", "off", "mem", "memory", "disk", "hits", "hit", "misses", "miss", "all", "1", "on",
];

#[derive(Default)]
pub(crate) struct Options {
    pub(crate) name: Option<LitStr>,
    pub(crate) version: Option<LitStr>,
    pub(crate) ignore: Vec<Ident>,
    /// Any expression whose value is `AsRef<Path>`, evaluated once, when the `Memo` is made.
    pub(crate) dir: Option<Expr>,
    pub(crate) disable: bool,
    pub(crate) allow_race: Option<LitBool>,
    pub(crate) log: Option<LitStr>,
}

impl Options {
    pub(crate) fn parse(attr: TokenStream) -> syn::Result<Options> {
        let mut options = Options::default();
        let mut seen: Vec<String> = Vec::new();
        let parser = syn::meta::parser(|meta| {
            let Some(option) = meta.path.get_ident().map(Ident::to_string) else {
                return Err(meta.error("expected an option name, like `name = \"..\"`"));
            };
            if seen.contains(&option) {
                return Err(meta.error(format!("`{option}` is given twice")));
            }
            seen.push(option.clone());
            match option.as_str() {
                "name" => {
                    let name: LitStr = meta.value()?.parse()?;
                    let text = name.value();
                    if text.is_empty() || text.chars().any(|ch| ch == '/' || ch.is_control()) {
                        return Err(syn::Error::new(
                            name.span(),
                            "a cache name must be non-empty, without '/' or control characters",
                        ));
                    }
                    options.name = Some(name);
                }
                "version" => options.version = Some(meta.value()?.parse()?),
                "dir" => options.dir = Some(meta.value()?.parse()?),
                "disable" => {
                    options.disable = if meta.input.peek(syn::Token![=]) {
                        meta.value()?.parse::<LitBool>()?.value
                    } else {
                        true
                    };
                }
                "allow_race" => options.allow_race = Some(meta.value()?.parse()?),
                "log" => {
                    let log: LitStr = meta.value()?.parse()?;
                    let text = log.value();
                    let unknown = text
                        .split(',')
                        .map(str::trim)
                        .filter(|word| !word.is_empty())
                        .find(|word| !LOG_WORDS.contains(&word.to_ascii_lowercase().as_str()));
                    if let Some(word) = unknown {
                        return Err(syn::Error::new(
                            log.span(),
                            format!(
                                "unknown log event `{word}`: expected a comma-separated list of \
                                 none, mem, disk, hits, misses, all"
                            ),
                        ));
                    }
                    options.log = Some(log);
                }
                "ignore" => meta.parse_nested_meta(|param| {
                    match param.path.get_ident() {
                        Some(ident) => options.ignore.push(ident.clone()),
                        None => return Err(param.error("expected a parameter name")),
                    }
                    Ok(())
                })?,
                _ => {
                    return Err(meta.error(format!(
                        "unknown option `{option}`: expected name, version, ignore, dir, \
                         disable, allow_race or log"
                    )));
                }
            }
            Ok(())
        });
        parser.parse2(attr)?;
        Ok(options)
    }
}
