//! SQL types, schemas and the scalar values operators compute with.

use std::fmt;

/// A column type. Storage: `Int`, `BigInt` and `Timestamp` are `i64` (a timestamp is epoch milliseconds,
/// UTC), `Double` is `f64`, `Boolean` is `bool`, `Varchar` is UTF-8 bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum DataType {
    Int,
    BigInt,
    Double,
    Boolean,
    Varchar,
    Timestamp,
}

/// How a type's values are laid out in a batch column.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Storage {
    Int,
    Double,
    Bool,
    Str,
}

impl DataType {
    pub fn storage(self) -> Storage {
        match self {
            DataType::Int | DataType::BigInt | DataType::Timestamp => Storage::Int,
            DataType::Double => Storage::Double,
            DataType::Boolean => Storage::Bool,
            DataType::Varchar => Storage::Str,
        }
    }

    pub fn is_numeric(self) -> bool {
        matches!(self, DataType::Int | DataType::BigInt | DataType::Double)
    }

    pub fn is_integer(self) -> bool {
        matches!(self, DataType::Int | DataType::BigInt)
    }
}

impl fmt::Display for DataType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            DataType::Int => "INT",
            DataType::BigInt => "BIGINT",
            DataType::Double => "DOUBLE",
            DataType::Boolean => "BOOLEAN",
            DataType::Varchar => "VARCHAR",
            DataType::Timestamp => "TIMESTAMP(3)",
        })
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Field {
    pub name: String,
    pub ty: DataType,
}

/// The columns of a table or of an operator's output, in order.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Schema {
    pub fields: Vec<Field>,
}

impl Schema {
    pub fn new(fields: Vec<Field>) -> Schema {
        Schema { fields }
    }

    pub fn len(&self) -> usize {
        self.fields.len()
    }

    pub fn is_empty(&self) -> bool {
        self.fields.is_empty()
    }

    /// Column index by name; SQL identifiers match case-insensitively, as in Flink's default.
    pub fn index_of(&self, name: &str) -> Option<usize> {
        self.fields
            .iter()
            .position(|f| f.name == name)
            .or_else(|| self.fields.iter().position(|f| f.name.eq_ignore_ascii_case(name)))
    }

    pub fn types(&self) -> Vec<DataType> {
        self.fields.iter().map(|f| f.ty).collect()
    }

    /// Parses a schema declaration such as `symbol VARCHAR, qty BIGINT, ts TIMESTAMP(3)`.
    pub fn parse(text: &str) -> Result<Schema, String> {
        let mut fields: Vec<Field> = Vec::new();
        for (idx, part) in text.split(',').enumerate() {
            let part = part.trim();
            let mut words = part.split_whitespace();
            let (Some(name), Some(ty)) = (words.next(), words.next()) else {
                return Err(format!("column {} (`{part}`) must be `name TYPE`, e.g. `qty BIGINT`", idx + 1));
            };
            let rest: Vec<&str> = words.collect();
            let ty_text = std::iter::once(ty).chain(rest.iter().copied()).collect::<Vec<_>>().join(" ");
            let ty = parse_type(&ty_text).ok_or_else(|| {
                format!(
                    "column `{name}` has unsupported type `{ty_text}`; use one of BIGINT, INT, DOUBLE, BOOLEAN, VARCHAR, STRING, TIMESTAMP(3)"
                )
            })?;
            let name = name.trim_matches('`').to_string();
            if fields.iter().any(|f| f.name.eq_ignore_ascii_case(&name)) {
                return Err(format!("column `{name}` is declared twice"));
            }
            fields.push(Field { name, ty });
        }
        Ok(Schema { fields })
    }
}

/// Parses a type name as written in a schema or a CAST.
pub fn parse_type(text: &str) -> Option<DataType> {
    let t = text.trim().to_ascii_uppercase();
    let t = t.replace(' ', "");
    Some(match t.as_str() {
        "BIGINT" => DataType::BigInt,
        "INT" | "INTEGER" => DataType::Int,
        "DOUBLE" | "DOUBLEPRECISION" | "FLOAT" => DataType::Double,
        "BOOLEAN" | "BOOL" => DataType::Boolean,
        "STRING" | "VARCHAR" => DataType::Varchar,
        "TIMESTAMP" | "TIMESTAMP(3)" => DataType::Timestamp,
        _ if t.starts_with("VARCHAR(") && t.ends_with(')') => DataType::Varchar,
        _ => return None,
    })
}

/// A scalar value read from a batch or computed by an expression. Strings borrow from the batch they were
/// read from; only string functions that build new text produce `OwnedStr`.
#[derive(Clone, Debug, PartialEq)]
pub enum Datum<'a> {
    Null,
    Int(i64),
    Double(f64),
    Bool(bool),
    Str(&'a [u8]),
    OwnedStr(Box<[u8]>),
}

impl<'a> Datum<'a> {
    pub fn is_null(&self) -> bool {
        matches!(self, Datum::Null)
    }

    pub fn as_bytes(&self) -> Option<&[u8]> {
        match self {
            Datum::Str(s) => Some(s),
            Datum::OwnedStr(s) => Some(s),
            _ => None,
        }
    }

    pub fn to_value(&self) -> Value {
        match self {
            Datum::Null => Value::Null,
            Datum::Int(v) => Value::Int(*v),
            Datum::Double(v) => Value::Double(*v),
            Datum::Bool(v) => Value::Bool(*v),
            Datum::Str(s) => Value::Str(Box::from(*s)),
            Datum::OwnedStr(s) => Value::Str(s.clone()),
        }
    }
}

/// An owned scalar, kept in operator state (MIN/MAX of strings, DISTINCT sets, group keys).
#[derive(Clone, Debug, PartialEq)]
pub enum Value {
    Null,
    Int(i64),
    Double(f64),
    Bool(bool),
    Str(Box<[u8]>),
}

impl Value {
    pub fn is_null(&self) -> bool {
        matches!(self, Value::Null)
    }

    pub fn as_datum(&self) -> Datum<'_> {
        match self {
            Value::Null => Datum::Null,
            Value::Int(v) => Datum::Int(*v),
            Value::Double(v) => Datum::Double(*v),
            Value::Bool(v) => Datum::Bool(*v),
            Value::Str(s) => Datum::Str(s),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_schemas() {
        let s = Schema::parse("symbol VARCHAR, qty BIGINT, px DOUBLE, ts TIMESTAMP(3), ok BOOLEAN").unwrap();
        assert_eq!(
            s.types(),
            vec![DataType::Varchar, DataType::BigInt, DataType::Double, DataType::Timestamp, DataType::Boolean]
        );
        assert_eq!(s.index_of("QTY"), Some(1));
        assert!(Schema::parse("a BIGINT, a INT").unwrap_err().contains("twice"));
        assert!(Schema::parse("a DECIMAL(10, 2)").is_err());
        assert!(Schema::parse("justname").unwrap_err().contains("name TYPE"));
    }
}
