//! Nothing: the fuzz targets are the tests in `tests/fuzz/` (`cargo xtask fuzz`).
