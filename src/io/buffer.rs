//! Fixed-size buffers and the per-worker pool they come from.
//!
//! The pool reserves `count * size` bytes once, zeroed, so the kernel backs a
//! page only when it is first written: the resident cost is that of the
//! buffers actually used at the peak, not of the reservation. Buffers are
//! handed out LIFO so the same few stay hot in cache. Taking and returning a
//! buffer never allocates. A buffer is named by a [`BufId`]; a flow that
//! holds no data holds no buffer.

/// Index of a buffer in its pool.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BufId(u32);

pub struct BufferPool {
    memory: Box<[u8]>,
    size: usize,
    free: Vec<u32>,
    count: usize,
}

impl BufferPool {
    /// A pool of `count` buffers of `size` bytes each.
    pub fn new(count: usize, size: usize) -> BufferPool {
        assert!(count > 0 && size > 0 && count < u32::MAX as usize);
        BufferPool {
            memory: vec![0u8; count * size].into_boxed_slice(),
            size,
            free: (0..count as u32).rev().collect(),
            count,
        }
    }

    /// A free buffer, or `None` when every buffer is out.
    pub fn take(&mut self) -> Option<BufId> {
        self.free.pop().map(BufId)
    }

    /// Give a buffer back.
    pub fn put(&mut self, id: BufId) {
        debug_assert!((id.0 as usize) < self.count);
        debug_assert!(self.free.len() < self.count, "buffer returned twice");
        self.free.push(id.0);
    }

    pub fn get(&self, id: BufId) -> &[u8] {
        let start = id.0 as usize * self.size;
        &self.memory[start..start + self.size]
    }

    pub fn get_mut(&mut self, id: BufId) -> &mut [u8] {
        let start = id.0 as usize * self.size;
        &mut self.memory[start..start + self.size]
    }

    /// Buffer `from` to read and buffer `to` to write, at once.
    pub fn read_and_write(&mut self, from: BufId, to: BufId) -> (&[u8], &mut [u8]) {
        assert_ne!(from, to, "a buffer cannot be read and written at once");
        let size = self.size;
        let (f, t) = (from.0 as usize * size, to.0 as usize * size);
        if f < t {
            let (low, high) = self.memory.split_at_mut(t);
            (&low[f..f + size], &mut high[..size])
        } else {
            let (low, high) = self.memory.split_at_mut(f);
            (&high[..size], &mut low[t..t + size])
        }
    }

    pub fn buffer_size(&self) -> usize {
        self.size
    }

    pub fn in_use(&self) -> usize {
        self.count - self.free.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buffers_are_distinct_and_come_back() {
        let mut pool = BufferPool::new(3, 8);
        let a = pool.take().unwrap();
        let b = pool.take().unwrap();
        pool.get_mut(a).fill(1);
        pool.get_mut(b).fill(2);
        assert_eq!(pool.get(a), &[1; 8]);
        assert_eq!(pool.in_use(), 2);
        let c = pool.take().unwrap();
        assert!(pool.take().is_none(), "a pool of three gives three");
        pool.put(a);
        pool.put(b);
        pool.put(c);
        assert_eq!(pool.in_use(), 0);
    }
}
