//! The SQL seam: the metadata logic is written once against [`Sql`] — a connection or an open
//! transaction of either backend (SQLite embedded, PostgreSQL).
//!
//! Statements use `?N` placeholders and the SQL both engines speak (`INSERT … ON CONFLICT`,
//! `||`, `LIMIT ?N`); the few that differ ask [`Sql::dialect`]. Values cross the seam as
//! [`Val`]: integers, text, bytes or NULL; a [`Row`] is a result row's values, read back by
//! column index with [`Row::get`]. Every row of a result is collected before it is returned,
//! so a caller pages through large results with `LIMIT` (as every listing here does).

use crate::error::Error;

/// Which SQL a backend speaks, for the statements that differ.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dialect {
    Sqlite,
    Postgres,
}

/// One value crossing the seam.
#[derive(Debug, Clone, PartialEq)]
pub enum Val {
    Null,
    Int(i64),
    Text(String),
    Blob(Vec<u8>),
}

/// A statement parameter.
pub trait ToVal {
    fn to_val(&self) -> Val;
}

macro_rules! int_to_val {
    ($($t:ty),*) => {$(
        impl ToVal for $t {
            fn to_val(&self) -> Val {
                Val::Int(*self as i64)
            }
        }
    )*};
}
int_to_val!(i64, i32, u8, u32, u64, usize);

impl ToVal for bool {
    fn to_val(&self) -> Val {
        Val::Int(*self as i64)
    }
}
impl ToVal for str {
    fn to_val(&self) -> Val {
        Val::Text(self.to_string())
    }
}
impl ToVal for String {
    fn to_val(&self) -> Val {
        Val::Text(self.clone())
    }
}
impl ToVal for [u8] {
    fn to_val(&self) -> Val {
        Val::Blob(self.to_vec())
    }
}
impl ToVal for Vec<u8> {
    fn to_val(&self) -> Val {
        Val::Blob(self.clone())
    }
}
impl<T: ToVal + ?Sized> ToVal for &T {
    fn to_val(&self) -> Val {
        (**self).to_val()
    }
}
impl<T: ToVal> ToVal for Option<T> {
    fn to_val(&self) -> Val {
        match self {
            Some(v) => v.to_val(),
            None => Val::Null,
        }
    }
}

/// Statement parameters: `params![a, b]` is a `&[&dyn ToVal]`.
#[macro_export]
macro_rules! params {
    () => { &[] as &[&dyn $crate::sql::ToVal] };
    ($($p:expr),+ $(,)?) => { &[$(&$p as &dyn $crate::sql::ToVal),+] as &[&dyn $crate::sql::ToVal] };
}

/// A value read back from a column.
pub trait FromVal: Sized {
    fn from_val(v: &Val) -> Option<Self>;
}

macro_rules! int_from_val {
    ($($t:ty),*) => {$(
        impl FromVal for $t {
            fn from_val(v: &Val) -> Option<Self> {
                match v {
                    Val::Int(i) => <$t>::try_from(*i).ok(),
                    _ => None,
                }
            }
        }
    )*};
}
int_from_val!(i64, i32, u8, u32, u64, usize);

impl FromVal for bool {
    fn from_val(v: &Val) -> Option<Self> {
        match v {
            Val::Int(i) => Some(*i != 0),
            _ => None,
        }
    }
}
impl FromVal for String {
    fn from_val(v: &Val) -> Option<Self> {
        match v {
            Val::Text(s) => Some(s.clone()),
            _ => None,
        }
    }
}
impl FromVal for Vec<u8> {
    fn from_val(v: &Val) -> Option<Self> {
        match v {
            Val::Blob(b) => Some(b.clone()),
            Val::Text(s) => Some(s.as_bytes().to_vec()),
            _ => None,
        }
    }
}
impl<T: FromVal> FromVal for Option<T> {
    fn from_val(v: &Val) -> Option<Self> {
        match v {
            Val::Null => Some(None),
            v => T::from_val(v).map(Some),
        }
    }
}

/// One result row.
#[derive(Debug, Clone, PartialEq)]
pub struct Row(pub Vec<Val>);

impl Row {
    /// Column `i` as a `T`; an error if it is missing or of another type.
    pub fn get<T: FromVal>(&self, i: usize) -> Result<T, Error> {
        let v = self
            .0
            .get(i)
            .ok_or_else(|| Error::internal(format!("no column {i}")))?;
        T::from_val(v).ok_or_else(|| {
            Error::internal(format!(
                "column {i} holds {v:?}, not a {}",
                std::any::type_name::<T>()
            ))
        })
    }
}

/// A connection or transaction of either backend.
pub trait Sql {
    /// The SQL this backend speaks.
    fn dialect(&self) -> Dialect;
    /// Run one statement; the number of rows it changed.
    fn execute(&self, sql: &str, params: &[&dyn ToVal]) -> Result<usize, Error>;
    /// Run one query; every row of its result.
    fn query(&self, sql: &str, params: &[&dyn ToVal]) -> Result<Vec<Row>, Error>;
    /// Run one query, handing `f` its rows in order until `f` returns `false`. SQLite stops
    /// reading there (a listing that jumps ahead does not read the rows it skips); on
    /// PostgreSQL the statement's `LIMIT` bounds the work. `f` must not use the connection.
    fn each(
        &self,
        sql: &str,
        params: &[&dyn ToVal],
        f: &mut dyn FnMut(Row) -> Result<bool, Error>,
    ) -> Result<(), Error> {
        for r in self.query(sql, params)? {
            if !f(r)? {
                break;
            }
        }
        Ok(())
    }
    /// Run statements without parameters (`SAVEPOINT w`, DDL).
    fn batch(&self, sql: &str) -> Result<(), Error>;
    /// Run one statement without parameters or results (`SAVEPOINT w`) before the next
    /// statement on this connection, at the latest together with it: PostgreSQL pipelines it
    /// with that one, saving a round trip; SQLite runs it at once from its statement cache.
    /// Its failure is that next statement's failure.
    fn batch_deferred(&self, sql: &str) -> Result<(), Error> {
        self.batch(sql)
    }
}

impl dyn Sql + '_ {
    /// The first row of a query mapped by `f`, if there is one.
    pub fn query_opt<T>(
        &self,
        sql: &str,
        params: &[&dyn ToVal],
        f: impl FnOnce(&Row) -> Result<T, Error>,
    ) -> Result<Option<T>, Error> {
        self.query(sql, params)?.first().map(f).transpose()
    }

    /// The first row of a query mapped by `f`; an internal error if there is none.
    pub fn query_row<T>(
        &self,
        sql: &str,
        params: &[&dyn ToVal],
        f: impl FnOnce(&Row) -> Result<T, Error>,
    ) -> Result<T, Error> {
        self.query_opt(sql, params, f)?
            .ok_or_else(|| Error::internal(format!("no row from {sql}")))
    }

    /// Every row of a query mapped by `f`.
    pub fn query_map<T>(
        &self,
        sql: &str,
        params: &[&dyn ToVal],
        f: impl FnMut(&Row) -> Result<T, Error>,
    ) -> Result<Vec<T>, Error> {
        self.query(sql, params)?.iter().map(f).collect()
    }

    /// Whether a query has a row.
    pub fn exists(&self, sql: &str, params: &[&dyn ToVal]) -> Result<bool, Error> {
        Ok(!self.query(sql, params)?.is_empty())
    }

    /// The first column of the first row (e.g. a `count(*)`).
    pub fn value<T: FromVal>(&self, sql: &str, params: &[&dyn ToVal]) -> Result<T, Error> {
        self.query_row(sql, params, |r| r.get(0))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_convert_both_ways_and_refuse_the_wrong_type() {
        let r = Row(vec![Val::Int(7), Val::Text("x".into()), Val::Null]);
        assert_eq!(r.get::<i64>(0).unwrap(), 7);
        assert_eq!(r.get::<u8>(0).unwrap(), 7);
        assert_eq!(r.get::<String>(1).unwrap(), "x");
        assert_eq!(r.get::<Option<String>>(2).unwrap(), None);
        assert!(r.get::<String>(0).is_err());
        assert!(r.get::<i64>(3).is_err());
        assert!(Row(vec![Val::Int(-1)]).get::<u64>(0).is_err());
        let p: &[&dyn ToVal] = params![1u8, "a", None::<i64>, true];
        let v: Vec<Val> = p.iter().map(|p| p.to_val()).collect();
        assert_eq!(
            v,
            [Val::Int(1), Val::Text("a".into()), Val::Null, Val::Int(1)]
        );
    }
}
