//! Content-defined chunking: FastCDC 2020 with a secret gear table.
//!
//! The cut-point search is the `fastcdc` crate's `cut_gear`, given a gear table derived from
//! the repository's chunker key (see `crypto`), so chunk boundaries, and hence chunk sizes,
//! depend on a secret and cannot be used to fingerprint known files. The crate's own
//! `StreamCDC` only offers a 64-bit XOR seed and copies its whole buffer after every chunk,
//! so the streaming loop is ours: one buffer of a maximum chunk plus a window, reused across
//! files, read a short window ahead of the next cut (see [`Chunker::chunk_stream`]).

use std::io::Read;

use fastcdc::v2020::{cut_gear, MASKS};

use crate::format::config::ChunkerParams;

/// A reusable chunker bound to one repository's parameters and gear table.
pub struct Chunker {
    params: ChunkerParams,
    gear: Box<[u64; 256]>,
    gear_ls: Box<[u64; 256]>,
    masks: (u64, u64),
    buf: Vec<u8>,
}

impl Chunker {
    pub fn new(params: ChunkerParams, gear: [u64; 256]) -> Self {
        let mut gear_ls = [0u64; 256];
        for (l, g) in gear_ls.iter_mut().zip(gear.iter()) {
            *l = g << 1;
        }
        let bits = params.avg.trailing_zeros();
        let norm = u32::from(params.normalization);
        let masks = (MASKS[(bits + norm) as usize], MASKS[(bits - norm) as usize]);
        Chunker { params, gear: Box::new(gear), gear_ls: Box::new(gear_ls), masks, buf: Vec::new() }
    }

    /// Finds the length of the next chunk at the start of `data` (all of it at the end):
    /// the `fastcdc` crate's `cut_gear` over the whole of `data`.
    fn cut_whole(&self, data: &[u8]) -> usize {
        let (mask_s, mask_l) = self.masks;
        let p = &self.params;
        let (_, n) = cut_gear(
            data,
            p.min as usize,
            p.avg as usize,
            p.max as usize,
            mask_s,
            mask_l,
            mask_s << 1,
            mask_l << 1,
            &self.gear,
            &self.gear_ls,
        );
        n
    }

    /// [`Self::cut_whole`], knowing that no boundary lies in the first `scanned` bytes (a
    /// scan of that shorter prefix found none), so the scan resumes there instead of
    /// starting over. `cut_gear` reads bytes in pairs, `hash = (hash << 2) + gear_ls[a] +
    /// gear[b]`: a pair's contribution is multiplied by 4 per later pair and so is gone from
    /// the 64-bit hash after 32 pairs. Re-hashing the 32 pairs before the resume point
    /// therefore rebuilds the hash exactly. Resuming is done only past `avg` (where
    /// `cut_gear` uses the large mask) and 32 pairs past `min`; otherwise the whole scan runs.
    fn cut(&self, data: &[u8], scanned: usize) -> usize {
        let (min, avg, max) = (self.params.min as usize, self.params.avg as usize, self.params.max as usize);
        let resume = scanned.min(data.len()) / 2;
        if scanned < avg || resume < min / 2 + 32 {
            return self.cut_whole(data);
        }
        let remaining = data.len().min(max);
        let (gear, gear_ls) = (&*self.gear, &*self.gear_ls);
        let mut hash = 0u64;
        for i in resume - 32..resume {
            hash = (hash << 2).wrapping_add(gear_ls[data[2 * i] as usize]);
            hash = hash.wrapping_add(gear[data[2 * i + 1] as usize]);
        }
        let mask_l = self.masks.1;
        for i in resume..remaining / 2 {
            let a = 2 * i;
            hash = (hash << 2).wrapping_add(gear_ls[data[a] as usize]);
            if hash & (mask_l << 1) == 0 {
                return a;
            }
            hash = hash.wrapping_add(gear[data[a + 1] as usize]);
            if hash & mask_l == 0 {
                return a + 1;
            }
        }
        remaining
    }

    /// Reads `src` to its end, calling `emit` with each chunk in order. Returns bytes read.
    /// Read errors and errors from `emit` stop the loop and are returned.
    ///
    /// Reads run only a short window (twice the average chunk) ahead of the next cut, so a
    /// chunk is still in this core's cache when it is cut, hashed and handed on; reading a
    /// whole maximum chunk ahead made every byte travel to memory and back. A cut found
    /// inside the window is final: the gear scan runs left to right and a boundary found in
    /// a prefix is the first boundary of the whole stream too (`cut_gear` only uses the
    /// length to stop). When the window holds no boundary, it is doubled, up to the
    /// maximum chunk, and the scan resumes where it stopped (`Chunker::cut`), so boundaries
    /// do not depend on how reads return.
    pub fn chunk_stream<E: From<std::io::Error>>(
        &mut self,
        mut src: impl Read,
        mut emit: impl FnMut(&[u8]) -> Result<(), E>,
    ) -> Result<u64, E> {
        let max = self.params.max as usize;
        let window = (2 * self.params.avg as usize).clamp(1, max);
        // Room for a maximum chunk plus a window: what is left is moved to the front only
        // when a window would not fit after it.
        if self.buf.len() != max + window {
            self.buf = vec![0u8; max + window];
        }
        let (mut start, mut end, mut eof, mut total, mut want) = (0usize, 0usize, false, 0u64, window);
        // Bytes after `start` already scanned without finding a boundary.
        let mut scanned = 0;
        loop {
            if !eof && end - start < want {
                if start + want > self.buf.len() {
                    self.buf.copy_within(start..end, 0);
                    end -= start;
                    start = 0;
                }
                while !eof && end - start < want {
                    match src.read(&mut self.buf[end..start + want]) {
                        Ok(0) => eof = true,
                        Ok(n) => end += n,
                        Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                        Err(e) => return Err(e.into()),
                    }
                }
            }
            if start == end {
                return Ok(total);
            }
            let n = self.cut(&self.buf[start..end], scanned);
            if n == end - start && !eof && n < max {
                scanned = n;
                want = (2 * want).min(max);
                continue;
            }
            emit(&self.buf[start..start + n])?;
            total += n as u64;
            start += n;
            want = window;
            scanned = 0;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn small() -> ChunkerParams {
        ChunkerParams { min: 256, avg: 1024, max: 4096, normalization: 1 }
    }

    fn chunks(c: &mut Chunker, data: &[u8]) -> Vec<Vec<u8>> {
        let mut out = Vec::new();
        c.chunk_stream::<std::io::Error>(data, |b| {
            out.push(b.to_vec());
            Ok(())
        })
        .unwrap();
        out
    }

    fn gear(seed: u8) -> [u64; 256] {
        let mut g = [0u64; 256];
        let mut x = blake3::hash(&[seed]);
        for v in g.iter_mut() {
            x = blake3::hash(x.as_bytes());
            *v = u64::from_le_bytes(x.as_bytes()[..8].try_into().unwrap());
        }
        g
    }

    proptest! {
        #[test]
        fn chunks_concatenate_to_input_and_respect_bounds(data in proptest::collection::vec(any::<u8>(), 0..40000)) {
            let mut c = Chunker::new(small(), gear(1));
            let cs = chunks(&mut c, &data);
            prop_assert_eq!(cs.concat(), data);
            for (i, ch) in cs.iter().enumerate() {
                prop_assert!(ch.len() <= 4096);
                if i + 1 < cs.len() { prop_assert!(ch.len() >= 256); }
            }
        }
    }

    /// Hands out at most `step` bytes per read, to test that boundaries do not depend on how
    /// reads return.
    struct Trickle<'a> {
        data: &'a [u8],
        step: usize,
    }

    impl Read for Trickle<'_> {
        fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
            let n = buf.len().min(self.step).min(self.data.len());
            buf[..n].copy_from_slice(&self.data[..n]);
            self.data = &self.data[n..];
            Ok(n)
        }
    }

    proptest! {
        #[test]
        fn boundaries_match_a_scan_of_the_whole_input(
            data in proptest::collection::vec(any::<u8>(), 0..40000),
            step in 1usize..5000,
        ) {
            let c = Chunker::new(small(), gear(3));
            let mut whole = Vec::new();
            let mut rest = &data[..];
            while !rest.is_empty() {
                let n = c.cut_whole(rest);
                whole.push(rest[..n].to_vec());
                rest = &rest[n..];
            }
            let mut c = c;
            let mut streamed = Vec::new();
            c.chunk_stream::<std::io::Error>(Trickle { data: &data, step }, |b| {
                streamed.push(b.to_vec());
                Ok(())
            })
            .unwrap();
            prop_assert_eq!(streamed, whole);
        }
    }

    proptest! {
        /// Resuming after a prefix with no boundary finds what a whole scan finds.
        #[test]
        fn a_resumed_scan_matches_a_whole_scan(
            data in proptest::collection::vec(any::<u8>(), 0..12000),
            permille in 0usize..=1000,
            seed in any::<u8>(),
        ) {
            let c = Chunker::new(small(), gear(seed));
            let whole = c.cut_whole(&data);
            // Only bytes before the first boundary may be skipped.
            let prefix = whole * permille / 1000;
            prop_assert_eq!(c.cut(&data, prefix), whole);
        }
    }

    /// Long stretches without a boundary (zeros never match a mask) and data with rare
    /// boundaries take the resumed path often; chunks still match a whole scan.
    #[test]
    fn resumed_scans_on_sparse_boundaries_match_whole_scans() {
        let c = Chunker::new(small(), gear(9));
        let mut data = vec![0u8; 3000];
        data.extend((0..30_000u32).map(|i| (i.wrapping_mul(2654435761) >> 24) as u8));
        data.extend(vec![7u8; 5000]);
        let mut resumed = 0;
        for start in (0..data.len()).step_by(97) {
            let rest = &data[start..];
            let whole = c.cut_whole(rest);
            for prefix in (1024..whole.min(rest.len())).step_by(61) {
                if c.cut_whole(&rest[..prefix]) == prefix {
                    assert_eq!(c.cut(rest, prefix), whole, "start {start} prefix {prefix}");
                    resumed += 1;
                }
            }
        }
        assert!(resumed > 1000, "only {resumed} resumed scans were checked");
    }

    #[test]
    fn boundaries_resync_after_an_insertion_and_depend_on_the_key() {
        let data: Vec<u8> = (0..200_000u32).map(|i| (i.wrapping_mul(2654435761) >> 13) as u8).collect();
        let mut c = Chunker::new(small(), gear(1));
        let a = chunks(&mut c, &data);
        let mut shifted = b"inserted".to_vec();
        shifted.extend_from_slice(&data);
        let b = chunks(&mut c, &shifted);
        let common = a.iter().filter(|x| b.contains(x)).count();
        assert!(common * 10 >= a.len() * 8, "only {common} of {} chunks survived an insertion", a.len());
        let other = chunks(&mut Chunker::new(small(), gear(2)), &data);
        assert_ne!(a.iter().map(Vec::len).collect::<Vec<_>>(), other.iter().map(Vec::len).collect::<Vec<_>>());
    }
}
