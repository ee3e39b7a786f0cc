//! The one rule for fixed vocabularies: an enum whose every variant has a
//! wire name.
//!
//! The record, the store, the metrics and the API all speak small fixed sets
//! of words — protocols, operations, statuses, error kinds. Each is an enum
//! declared with [`wire_enum!`], which writes, from one list of
//! `Variant = "wire_name"` pairs: serde (the wire name both ways), `ALL`
//! (every variant, in order), `as_str`, `parse`, `Display`, and comparison
//! with a `&str`. A word is spelled once, where its enum is declared; every
//! other use goes through the enum.

/// Declares an enum of wire-named variants (see the module documentation).
#[macro_export]
macro_rules! wire_enum {
    (
        $(#[$meta:meta])*
        $vis:vis enum $name:ident {
            $( $(#[$vmeta:meta])* $variant:ident = $wire:literal ),+ $(,)?
        }
    ) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
        $vis enum $name {
            $( $(#[$vmeta])* #[serde(rename = $wire)] $variant ),+
        }

        impl $name {
            /// Every variant, in declaration order.
            pub const ALL: [$name; [$($wire),+].len()] = [$($name::$variant),+];

            /// The wire name.
            pub fn as_str(self) -> &'static str {
                match self {
                    $( $name::$variant => $wire ),+
                }
            }

            /// The variant with the wire name `text`.
            pub fn parse(text: &str) -> Option<$name> {
                match text {
                    $( $wire => Some($name::$variant), )+
                    _ => None,
                }
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl PartialEq<&str> for $name {
            fn eq(&self, other: &&str) -> bool {
                self.as_str() == *other
            }
        }
    };
}
