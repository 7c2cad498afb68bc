//! Errors of compiling and evaluating JMESPath expressions.

/// Why a JMESPath expression could not be compiled or evaluated.
///
/// Compile-time problems (syntax, unknown functions, wrong arity, a slice step of 0, duplicate
/// keys in a multi-select hash, nesting deeper than the parser allows) are all
/// [`JmesPathError::Parse`], like the original, which rejected them when the template loaded.
/// Everything else happens while evaluating against a message and, in the original, aborted the
/// event.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum JmesPathError {
    /// The expression is not valid JMESPath (or calls an unknown function, or calls one with
    /// the wrong number of arguments).
    #[error("the following JmesPath expression could not be parsed: {expression}. cause: {cause}")]
    Parse {
        /// The expression text as written in the template.
        expression: String,
        /// What is wrong and where (1-based column).
        cause: String,
    },
    /// A function received an argument of a type it does not accept. For the original's
    /// custom functions the message is exactly the original's, e.g. `Error: invalid-type,
    /// function add expects argument 0 to be one of the following: Integer|Float`.
    #[error("{message}")]
    InvalidType {
        /// The function that rejected its argument.
        function: String,
        /// The full message.
        message: String,
    },
    /// `divide` with two integer arguments and an integer divisor of 0 (the original threw
    /// `DivideByZeroException`).
    #[error(
        "function {function} attempted to divide by zero: both arguments are integers and the divisor is 0 (guard the divisor, or make an argument a float to get IEEE infinity)"
    )]
    DivideByZero {
        /// The function (`divide`).
        function: String,
    },
    /// An integer result or argument does not fit the range the original used (it threw
    /// `OverflowException`), e.g. `pow` with integer arguments beyond 64 bits.
    #[error("{message}")]
    Overflow {
        /// The function that overflowed.
        function: String,
        /// The full message.
        message: String,
    },
    /// An argument lies outside the range the function accepts (the original threw
    /// `ArgumentOutOfRangeException`), e.g. an `insertString` position beyond the string.
    #[error("{message}")]
    ArgumentOutOfRange {
        /// The function that rejected its argument.
        function: String,
        /// The full message.
        message: String,
    },
    /// [`select_one`](super::JmesPath::select_one) found a projection with more than one
    /// element. The original's text is `Multiple tokens were returned using expression $…`.
    #[error(
        "multiple tokens were returned using expression ${expression}; the expression must select at most one value (index the projection, e.g. `[0]`, or narrow the filter)"
    )]
    MultipleTokens {
        /// The expression text.
        expression: String,
    },
    /// A value is nested deeper than the evaluator is willing to recurse into.
    #[error(
        "a value is nested more than {limit} levels deep; the expression {expression} cannot compare, serialize or merge it"
    )]
    NestingTooDeep {
        /// The expression text.
        expression: String,
        /// The depth limit.
        limit: usize,
    },
    /// Evaluating the expression on this message took more steps than any mapping needs
    /// (nested projections can multiply the work combinatorially).
    #[error(
        "the expression {expression} needed more than {limit} evaluation steps on this message; simplify it (fewer nested projections)"
    )]
    TooMuchWork {
        /// The expression text.
        expression: String,
        /// The step budget.
        limit: u64,
    },
}

/// A runtime error before the expression text is attached (boxed so that results stay small
/// on the hot path).
#[derive(Debug)]
pub(crate) struct RtError(Box<RtKind>);

#[derive(Debug)]
pub(crate) enum RtKind {
    InvalidType(String, String),
    DivideByZero(String),
    Overflow(String, String),
    OutOfRange(String, String),
    TooDeep,
    TooMuchWork,
}

impl From<RtKind> for RtError {
    fn from(kind: RtKind) -> Self {
        RtError(Box::new(kind))
    }
}

impl RtError {
    pub(crate) fn invalid_type(function: &str, message: String) -> RtError {
        RtKind::InvalidType(function.to_owned(), message).into()
    }

    pub(crate) fn overflow(function: &str, message: String) -> RtError {
        RtKind::Overflow(function.to_owned(), message).into()
    }

    pub(crate) fn out_of_range(function: &str, message: String) -> RtError {
        RtKind::OutOfRange(function.to_owned(), message).into()
    }

    pub(crate) fn divide_by_zero(function: &str) -> RtError {
        RtKind::DivideByZero(function.to_owned()).into()
    }

    pub(crate) fn too_deep() -> RtError {
        RtKind::TooDeep.into()
    }

    pub(crate) fn into_public(self, expression: &str) -> JmesPathError {
        match *self.0 {
            RtKind::InvalidType(function, message) => {
                JmesPathError::InvalidType { function, message }
            }
            RtKind::DivideByZero(function) => JmesPathError::DivideByZero { function },
            RtKind::Overflow(function, message) => JmesPathError::Overflow { function, message },
            RtKind::OutOfRange(function, message) => {
                JmesPathError::ArgumentOutOfRange { function, message }
            }
            RtKind::TooDeep => JmesPathError::NestingTooDeep {
                expression: expression.to_owned(),
                limit: super::value::MAX_VALUE_DEPTH,
            },
            RtKind::TooMuchWork => JmesPathError::TooMuchWork {
                expression: expression.to_owned(),
                limit: super::interp::STEP_BUDGET,
            },
        }
    }
}

pub(crate) type RtResult<T> = Result<T, RtError>;
