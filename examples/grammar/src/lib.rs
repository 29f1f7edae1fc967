//! A small language's parser, generated at build time by LALRPOP (and memoized).

pub mod ast;

lalrpop_util::lalrpop_mod!(
    /// The generated parser.
    #[allow(clippy::all, missing_docs, unused_parens)]
    pub minilang
);

/// Parses a program.
pub fn parse(source: &str) -> Result<Vec<ast::Item>, String> {
    minilang::ProgramParser::new().parse(source).map_err(|err| err.to_string())
}

#[cfg(test)]
mod tests {
    use super::ast::{Expr, Item, Op};

    #[test]
    fn parses_a_program_with_precedence() {
        let program = super::parse(
            "const N = 1 + 2 * 3; fn main(x) { while x < N { x = x + 1; } return x; }",
        )
        .unwrap();
        assert_eq!(program.len(), 2);
        let Item::Const { value, .. } = &program[0] else { panic!("{program:?}") };
        let Expr::Binary(_, Op::Add, right) = value.as_ref() else { panic!("{value:?}") };
        assert!(matches!(right.as_ref(), Expr::Binary(_, Op::Mul, _)));
    }

    #[test]
    fn reports_syntax_errors() {
        assert!(super::parse("fn broken( {").is_err());
    }
}
