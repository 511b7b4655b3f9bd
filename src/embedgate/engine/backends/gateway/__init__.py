"""Gateway mode: tokenise here, run forward passes on upstream embedding servers."""
