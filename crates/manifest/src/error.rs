use std::fmt;

/// Why a manifest was refused. Every variant names the offending field or input, so the message can be shown to
/// the person who wrote the manifest as it is.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ManifestError {
    /// The text is not a well-formed manifest (syntax error, unknown field, wrong type).
    #[error("manifest {format} is malformed: {message}")]
    Parse {
        /// `TOML` or `JSON`.
        format: Format,
        /// The parser's message, with line and column where the parser gives them.
        message: String,
    },
    /// A field holds a value that is not allowed.
    #[error("manifest field `{field}`: {message}")]
    Invalid {
        /// The field, with an index for list entries (`allowed_write_paths[1]`).
        field: String,
        /// What is wrong and, where it helps, what to write instead.
        message: String,
    },
    /// A field asks for more than the operator's ceiling allows.
    #[error("manifest field `{field}`: {requested} exceeds the operator ceiling of {ceiling}")]
    AboveCeiling {
        /// The field.
        field: String,
        /// The value the manifest asked for.
        requested: u64,
        /// The ceiling in force.
        ceiling: u64,
    },
    /// The manifest file could not be read.
    #[error("cannot read manifest {path}: {message}")]
    Io {
        /// The path as given.
        path: String,
        /// The operating system's message.
        message: String,
    },
}

impl ManifestError {
    pub(crate) fn invalid(field: impl Into<String>, message: impl Into<String>) -> Self {
        ManifestError::Invalid { field: field.into(), message: message.into() }
    }

    /// The field this error is about, when it is about one field.
    pub fn field(&self) -> Option<&str> {
        match self {
            ManifestError::Invalid { field, .. } | ManifestError::AboveCeiling { field, .. } => Some(field),
            _ => None,
        }
    }
}

/// The two manifest syntaxes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// TOML.
    Toml,
    /// JSON.
    Json,
}

impl fmt::Display for Format {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Format::Toml => "TOML",
            Format::Json => "JSON",
        })
    }
}
