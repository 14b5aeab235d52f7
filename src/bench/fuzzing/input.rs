//! Turning fuzzer bytes into choices (structure-aware targets) and into
//! deterministic cut points (the piecewise-feeding checks).

/// Reads choices off the front of the fuzzer's bytes; past the end every
/// read is zero, so any input decodes to something.
pub struct Choices<'a> {
    data: &'a [u8],
}

impl<'a> Choices<'a> {
    pub fn new(data: &'a [u8]) -> Choices<'a> {
        Choices { data }
    }

    pub fn is_empty(&self) -> bool {
        self.data.is_empty()
    }

    pub fn u8(&mut self) -> u8 {
        match self.data.split_first() {
            Some((&b, rest)) => {
                self.data = rest;
                b
            }
            None => 0,
        }
    }

    pub fn u16(&mut self) -> u16 {
        u16::from_be_bytes([self.u8(), self.u8()])
    }

    pub fn u32(&mut self) -> u32 {
        u32::from_be_bytes([self.u8(), self.u8(), self.u8(), self.u8()])
    }

    pub fn u64(&mut self) -> u64 {
        ((self.u32() as u64) << 32) | self.u32() as u64
    }

    /// A number below `n` (`n` > 0).
    pub fn below(&mut self, n: usize) -> usize {
        self.u8() as usize % n
    }

    /// One of `options`.
    pub fn pick<T: Copy>(&mut self, options: &[T]) -> T {
        options[self.below(options.len())]
    }

    /// Up to `n` raw bytes.
    pub fn bytes(&mut self, n: usize) -> &'a [u8] {
        let n = n.min(self.data.len());
        let (b, rest) = self.data.split_at(n);
        self.data = rest;
        b
    }
}

/// FNV-1a: cut points that depend on the whole input, deterministically.
pub fn hash(data: &[u8]) -> u64 {
    data.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, &b| (h ^ b as u64).wrapping_mul(0x0000_0100_0000_01b3))
}

/// Ways to cut `len` bytes into pieces a connection could receive: two
/// pieces at a point chosen from the input's hash, and many small pieces.
pub fn cut_plans(data: &[u8]) -> Vec<Vec<usize>> {
    let len = data.len();
    if len < 2 {
        return Vec::new();
    }
    let h = hash(data);
    let two = vec![1 + (h as usize) % (len - 1)];
    let mut many = Vec::new();
    let mut pos = 0;
    let mut x = h;
    loop {
        x = x.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        pos += 1 + (x >> 59) as usize; // pieces of 1..=32 bytes
        if pos >= len {
            break;
        }
        many.push(pos);
    }
    vec![two, many]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn choices_run_dry_as_zeros() {
        let mut c = Choices::new(&[1, 2, 3]);
        assert_eq!(c.u16(), 0x0102);
        assert_eq!(c.bytes(5), &[3]);
        assert!(c.is_empty());
        assert_eq!((c.u8(), c.u64()), (0, 0));
    }

    #[test]
    fn cuts_are_inside_the_input_and_increasing() {
        let data: Vec<u8> = (0..200u8).collect();
        for plan in cut_plans(&data) {
            assert!(!plan.is_empty());
            assert!(plan.windows(2).all(|w| w[0] < w[1]));
            assert!(plan.iter().all(|&c| c > 0 && c < data.len()));
        }
        assert!(cut_plans(b"x").is_empty());
    }
}
