//! Where a label may go: the rectangles already taken, filed in a grid.

pub(super) type Rect = (i32, i32, i32, i32);

pub(super) fn overlaps(a: Rect, b: Rect) -> bool {
    a.0 < b.2 && b.0 < a.2 && a.1 < b.3 && b.1 < a.3
}

/// The rectangles the labels must not overlap, filed in a grid of square
/// cells so that a look-up checks only those sharing a cell with it: the
/// same answers as checking every one, without the cost of checking
/// thousands of points for each of thousands of labels.
#[derive(Default)]
pub(super) struct Taken {
    cells: std::collections::HashMap<(i32, i32), Vec<Rect>>,
    /// Rectangles spanning too many cells to file, checked every time.
    wide: Vec<Rect>,
}

impl Taken {
    /// The side of a cell, in pixels.
    const CELL: i32 = 64;

    /// The cells `r` covers (its corners included), `None` when too many.
    fn cells(r: Rect) -> Option<impl Iterator<Item = (i32, i32)>> {
        let c = |v: i32| v.div_euclid(Self::CELL);
        let (x0, x1, y0, y1) = (c(r.0), c(r.2), c(r.1), c(r.3));
        let n = (i64::from(x1) - i64::from(x0) + 1) * (i64::from(y1) - i64::from(y0) + 1);
        (n <= 64).then(|| (x0..=x1).flat_map(move |x| (y0..=y1).map(move |y| (x, y))))
    }

    pub(super) fn push(&mut self, r: Rect) {
        match Self::cells(r) {
            Some(cells) => {
                for cell in cells {
                    self.cells.entry(cell).or_default().push(r);
                }
            }
            None => self.wide.push(r),
        }
    }

    /// Whether `r` overlaps any rectangle taken.
    pub(super) fn overlaps(&self, r: Rect) -> bool {
        if self.wide.iter().any(|t| overlaps(*t, r)) {
            return true;
        }
        match Self::cells(r) {
            Some(mut cells) => cells.any(|cell| {
                self.cells
                    .get(&cell)
                    .is_some_and(|v| v.iter().any(|t| overlaps(*t, r)))
            }),
            None => self
                .cells
                .values()
                .any(|v| v.iter().any(|t| overlaps(*t, r))),
        }
    }
}

impl Extend<Rect> for Taken {
    fn extend<I: IntoIterator<Item = Rect>>(&mut self, rects: I) {
        for r in rects {
            self.push(r);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_grid_of_taken_rectangles_answers_as_checking_every_one() {
        // xorshift: deterministic rectangles of every size, some far off
        // and some too wide to file.
        let mut state = 0x9E37_79B9_7F4A_7C15_u64;
        let mut next = |n: i32| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state % n as u64) as i32
        };
        let rect = |next: &mut dyn FnMut(i32) -> i32| {
            let (x, y) = (next(3000) - 800, next(2000) - 600);
            let (w, h) = match next(100) {
                0 => (next(5000), next(3000)),
                _ => (next(200), next(40)),
            };
            (x, y, x + w, y + h)
        };
        let mut all: Vec<Rect> = Vec::new();
        let mut taken = Taken::default();
        for _ in 0..300 {
            let r = rect(&mut next);
            all.push(r);
            taken.push(r);
        }
        let mut answers = [0, 0];
        for _ in 0..3000 {
            let q = rect(&mut next);
            let want = all.iter().any(|t| overlaps(*t, q));
            assert_eq!(taken.overlaps(q), want, "{q:?}");
            answers[usize::from(want)] += 1;
        }
        assert!(answers[0] > 100 && answers[1] > 100, "{answers:?}");
    }

    #[test]
    fn rectangles_overlap_only_when_they_share_area() {
        assert!(overlaps((0, 0, 10, 10), (5, 5, 15, 15)));
        assert!(!overlaps((0, 0, 10, 10), (10, 0, 20, 10)));
        assert!(!overlaps((0, 0, 10, 10), (0, 11, 10, 20)));
    }
}
