//! The syntax tree the generated parser builds.

/// A binary operator.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[allow(missing_docs)]
pub enum Op {
    Or,
    And,
    Eq,
    Ne,
    Lt,
    Le,
    Gt,
    Ge,
    BitOr,
    BitXor,
    BitAnd,
    Shl,
    Shr,
    Add,
    Sub,
    Mul,
    Div,
    Rem,
}

/// An expression.
#[derive(Clone, Debug, PartialEq)]
#[allow(missing_docs)]
pub enum Expr {
    Number(i64),
    Text(String),
    Bool(bool),
    Var(String),
    List(Vec<Box<Expr>>),
    Neg(Box<Expr>),
    Not(Box<Expr>),
    Binary(Box<Expr>, Op, Box<Expr>),
    Call(Box<Expr>, Vec<Box<Expr>>),
    Index(Box<Expr>, Box<Expr>),
    Field(Box<Expr>, String),
    IfElse(Box<Expr>, Box<Expr>, Box<Expr>),
}

/// A statement.
#[derive(Clone, Debug, PartialEq)]
#[allow(missing_docs)]
pub enum Stmt {
    Let { name: String, value: Box<Expr> },
    Assign { target: String, value: Box<Expr> },
    If { cond: Box<Expr>, then: Vec<Stmt>, otherwise: Vec<Stmt> },
    While { cond: Box<Expr>, body: Vec<Stmt> },
    For { var: String, from: Box<Expr>, to: Box<Expr>, body: Vec<Stmt> },
    Return(Option<Box<Expr>>),
    Break,
    Continue,
    Expr(Box<Expr>),
}

/// A top-level item.
#[derive(Clone, Debug, PartialEq)]
#[allow(missing_docs)]
pub enum Item {
    Function { name: String, params: Vec<String>, body: Vec<Stmt> },
    Const { name: String, value: Box<Expr> },
}
