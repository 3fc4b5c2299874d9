"""The compiler: layer graph, kernel rules, symbolic checks, code generation."""
