"""The spec grammar (lark), its AST and the parser boundary."""
