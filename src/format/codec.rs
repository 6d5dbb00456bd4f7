//! The primitive encoding every structure in docs/format.md is built from.
//!
//! Hand-written on purpose: the repository format must be specified byte by byte and stay
//! readable for decades, independent of any serialization crate's version. The rules are few:
//! integers are fixed-width little-endian; byte strings and lists carry a u32 length (or
//! count) prefix; optional values carry a one-byte presence flag (0 or 1); ids are 32 raw
//! bytes. Decoding never trusts a length: every read is bounds-checked against the input and
//! counts are checked against the bytes left before anything is allocated.

use crate::format::FormatError;
use crate::id::ID_LEN;

/// Appends encoded values to a byte vector.
#[derive(Default)]
pub struct Writer {
    buf: Vec<u8>,
}

impl Writer {
    pub fn new() -> Self {
        Self::default()
    }
    pub fn into_bytes(self) -> Vec<u8> {
        self.buf
    }
    pub fn u8(&mut self, v: u8) {
        self.buf.push(v);
    }
    pub fn u32(&mut self, v: u32) {
        self.buf.extend_from_slice(&v.to_le_bytes());
    }
    pub fn i32(&mut self, v: i32) {
        self.buf.extend_from_slice(&v.to_le_bytes());
    }
    pub fn u64(&mut self, v: u64) {
        self.buf.extend_from_slice(&v.to_le_bytes());
    }
    pub fn i64(&mut self, v: i64) {
        self.buf.extend_from_slice(&v.to_le_bytes());
    }
    pub fn raw(&mut self, v: &[u8]) {
        self.buf.extend_from_slice(v);
    }
    /// A count or length prefix. Panics above u32::MAX: no structure may be that large.
    pub fn len(&mut self, n: usize) {
        self.u32(u32::try_from(n).expect("length exceeds the format's u32 limit"));
    }
    pub fn bytes(&mut self, v: &[u8]) {
        self.len(v.len());
        self.raw(v);
    }
    pub fn str(&mut self, v: &str) {
        self.bytes(v.as_bytes());
    }
    pub fn id(&mut self, v: &[u8; ID_LEN]) {
        self.raw(v);
    }
    pub fn opt_u64(&mut self, v: Option<u64>) {
        match v {
            None => self.u8(0),
            Some(x) => {
                self.u8(1);
                self.u64(x);
            }
        }
    }
    pub fn opt_str(&mut self, v: Option<&str>) {
        match v {
            None => self.u8(0),
            Some(x) => {
                self.u8(1);
                self.str(x);
            }
        }
    }
    pub fn opt_id(&mut self, v: Option<&[u8; ID_LEN]>) {
        match v {
            None => self.u8(0),
            Some(id) => {
                self.u8(1);
                self.id(id);
            }
        }
    }
}

/// Reads encoded values from a byte slice, failing on any truncation.
pub struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    pub fn new(buf: &'a [u8]) -> Self {
        Self { buf, pos: 0 }
    }
    pub fn remaining(&self) -> usize {
        self.buf.len() - self.pos
    }
    /// Fails unless every byte was consumed.
    pub fn finish(&self) -> Result<(), FormatError> {
        if self.remaining() == 0 {
            Ok(())
        } else {
            Err(FormatError::TrailingBytes(self.remaining()))
        }
    }
    pub fn raw(&mut self, n: usize) -> Result<&'a [u8], FormatError> {
        if n > self.remaining() {
            return Err(FormatError::Truncated);
        }
        let s = &self.buf[self.pos..self.pos + n];
        self.pos += n;
        Ok(s)
    }
    fn array<const N: usize>(&mut self) -> Result<[u8; N], FormatError> {
        Ok(self.raw(N)?.try_into().expect("length checked"))
    }
    pub fn u8(&mut self) -> Result<u8, FormatError> {
        Ok(self.raw(1)?[0])
    }
    pub fn u32(&mut self) -> Result<u32, FormatError> {
        Ok(u32::from_le_bytes(self.array()?))
    }
    pub fn i32(&mut self) -> Result<i32, FormatError> {
        Ok(i32::from_le_bytes(self.array()?))
    }
    pub fn u64(&mut self) -> Result<u64, FormatError> {
        Ok(u64::from_le_bytes(self.array()?))
    }
    pub fn i64(&mut self) -> Result<i64, FormatError> {
        Ok(i64::from_le_bytes(self.array()?))
    }
    /// A count of items each at least `min_item` bytes long; checked against what is left.
    pub fn count(&mut self, min_item: usize) -> Result<usize, FormatError> {
        let n = self.u32()? as usize;
        if n.saturating_mul(min_item.max(1)) > self.remaining() {
            return Err(FormatError::Truncated);
        }
        Ok(n)
    }
    pub fn bytes(&mut self) -> Result<&'a [u8], FormatError> {
        let n = self.u32()? as usize;
        self.raw(n)
    }
    pub fn string(&mut self) -> Result<String, FormatError> {
        String::from_utf8(self.bytes()?.to_vec()).map_err(|_| FormatError::Invalid("string is not UTF-8"))
    }
    pub fn id(&mut self) -> Result<[u8; ID_LEN], FormatError> {
        self.array()
    }
    fn flag(&mut self) -> Result<bool, FormatError> {
        match self.u8()? {
            0 => Ok(false),
            1 => Ok(true),
            _ => Err(FormatError::Invalid("option flag is neither 0 nor 1")),
        }
    }
    pub fn opt_u64(&mut self) -> Result<Option<u64>, FormatError> {
        Ok(if self.flag()? { Some(self.u64()?) } else { None })
    }
    pub fn opt_string(&mut self) -> Result<Option<String>, FormatError> {
        Ok(if self.flag()? { Some(self.string()?) } else { None })
    }
    pub fn opt_id(&mut self) -> Result<Option<[u8; ID_LEN]>, FormatError> {
        match self.u8()? {
            0 => Ok(None),
            1 => Ok(Some(self.id()?)),
            _ => Err(FormatError::Invalid("option flag is neither 0 nor 1")),
        }
    }
    /// Reads a list: a u32 count of items, each at least `min_item` bytes.
    pub fn list<T>(
        &mut self,
        min_item: usize,
        mut f: impl FnMut(&mut Self) -> Result<T, FormatError>,
    ) -> Result<Vec<T>, FormatError> {
        let n = self.count(min_item)?;
        let mut v = Vec::with_capacity(n);
        for _ in 0..n {
            v.push(f(self)?);
        }
        Ok(v)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn truncation_is_an_error_not_a_panic() {
        let mut w = Writer::new();
        w.bytes(b"hello");
        let b = w.into_bytes();
        for cut in 0..b.len() {
            assert!(Reader::new(&b[..cut]).bytes().is_err());
        }
        assert_eq!(Reader::new(&b).bytes().unwrap(), b"hello");
    }

    #[test]
    fn huge_count_is_rejected_before_allocating() {
        let mut w = Writer::new();
        w.u32(u32::MAX);
        let b = w.into_bytes();
        assert!(Reader::new(&b).list(1, |r| r.u8()).is_err());
    }
}
