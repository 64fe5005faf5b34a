"""Golden data the tests share: what the venues' docs publish (frames, signing vectors, example
credentials) and the metrics contract of docs/DESIGN.md. Tests import it from here, never from
each other."""
