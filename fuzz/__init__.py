"""Coverage-guided fuzzing of the decoders (atheris, libFuzzer): ``make fuzz``, docs/fuzzing.md."""
