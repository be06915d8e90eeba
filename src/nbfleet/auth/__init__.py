"""Who is calling: AK/SK signatures, tokens, principals."""
