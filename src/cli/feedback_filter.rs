//! `--where 'NAME>VALUE'`: a condition on feedback, for `tracegate export`.
//!
//! A trainer pulls the successful episodes: `--where 'reward>0'`,
//! `--where 'pass@1=true'`, `--where 'grade!=F'`. The condition holds when
//! some feedback item of that name satisfies it: numbers (and booleans, as
//! 1 and 0) compare as numbers with `>`, `>=`, `<`, `<=`, `=`, `!=`; a
//! string value compares with `=` and `!=` only.

use super::InvalidValue;
use crate::feedback::{Feedback, FeedbackValue};

/// One comparison.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Op {
    Gt,
    Ge,
    Lt,
    Le,
    Eq,
    Ne,
}

/// A parsed `--where`.
#[derive(Debug, Clone, PartialEq)]
pub struct FeedbackFilter {
    name: String,
    op: Op,
    value: String,
}

/// The operators, longest first so `>=` is not read as `>`.
const OPS: [(&str, Op); 6] = [
    (">=", Op::Ge),
    ("<=", Op::Le),
    ("!=", Op::Ne),
    (">", Op::Gt),
    ("<", Op::Lt),
    ("=", Op::Eq),
];

/// Parses `NAME OP VALUE`.
pub fn parse(text: &str) -> Result<FeedbackFilter, InvalidValue> {
    let found = OPS
        .iter()
        .filter_map(|(sym, op)| text.find(sym).map(|at| (at, *sym, *op)))
        .min_by_key(|(at, sym, _)| (*at, std::cmp::Reverse(sym.len())));
    let Some((at, sym, op)) = found else {
        return Err(InvalidValue(format!(
            "'{text}' is not NAME>VALUE (operators: > >= < <= = !=)"
        )));
    };
    let (name, value) = (text[..at].trim(), text[at + sym.len()..].trim());
    if name.is_empty() || value.is_empty() {
        return Err(InvalidValue(format!(
            "'{text}' needs a feedback name and a value"
        )));
    }
    Ok(FeedbackFilter {
        name: name.to_string(),
        op,
        value: value.to_string(),
    })
}

impl FeedbackFilter {
    /// Whether some item of `feedback` satisfies the condition.
    pub fn matches<'a>(&self, feedback: impl IntoIterator<Item = &'a Feedback>) -> bool {
        feedback
            .into_iter()
            .filter(|f| f.name == self.name)
            .any(|f| self.holds(&f.value))
    }

    fn holds(&self, value: &FeedbackValue) -> bool {
        let wanted = match self.value.as_str() {
            "true" => Some(1.0),
            "false" => Some(0.0),
            v => v.parse::<f64>().ok(),
        };
        match (value.as_number(), wanted, value) {
            (Some(have), Some(want), _) => match self.op {
                Op::Gt => have > want,
                Op::Ge => have >= want,
                Op::Lt => have < want,
                Op::Le => have <= want,
                Op::Eq => have == want,
                Op::Ne => have != want,
            },
            (_, _, FeedbackValue::String(s)) => match self.op {
                Op::Eq => *s == self.value,
                Op::Ne => *s != self.value,
                _ => false,
            },
            _ => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::feedback::TargetKind;

    fn item(name: &str, value: FeedbackValue) -> Feedback {
        Feedback {
            id: "f".into(),
            target_kind: TargetKind::Session,
            target_id: "s".into(),
            name: name.into(),
            value,
            comment: None,
            metadata: Default::default(),
            created_at: String::new(),
        }
    }

    #[test]
    fn conditions_compare_numbers_booleans_and_labels() {
        let reward = [item("reward", FeedbackValue::Number(0.5))];
        let pass = [item("pass@1", FeedbackValue::Boolean(true))];
        let grade = [item("grade", FeedbackValue::String("A".into()))];
        for (text, items, holds) in [
            ("reward>0", &reward[..], true),
            ("reward >= 0.5", &reward[..], true),
            ("reward<0.5", &reward[..], false),
            ("reward!=1", &reward[..], true),
            ("other>0", &reward[..], false),
            ("pass@1=true", &pass[..], true),
            ("pass@1>0", &pass[..], true),
            ("grade=A", &grade[..], true),
            ("grade!=A", &grade[..], false),
            ("grade>A", &grade[..], false),
        ] {
            assert_eq!(parse(text).unwrap().matches(items), holds, "{text}");
        }
        assert!(parse("reward").is_err());
        assert!(parse(">1").is_err());
    }
}
