"""Use-cases. Each public function owns its transaction boundary."""
