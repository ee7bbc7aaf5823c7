"""Segments: rule files in `config/segments/` compiled to DuckDB SQL (`compiler`), one asset each (`assets`)."""
