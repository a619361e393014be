//! The CSV import reader: any bytes are read to the end; rows come back on increasing lines.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let mut last = 0u64;
    let mut calls = 0usize;
    let _ = bulletin::import::read_rows_from(data, |line, _row| {
        assert!(line >= last, "line {line} after {last}");
        last = line;
        calls += 1;
        calls <= data.len() + 1
    });
});
