//! Entry points for the fuzz targets.
