"""One error type for everything the build can refuse, so the CLI can print it as one clear line."""


class BuildError(Exception):
    """A problem the operator can fix: says what went wrong and what to do about it."""

    def __init__(self, problem: str, fix: str):
        super().__init__(f"{problem}; {fix}")
        self.problem = problem
        self.fix = fix


class ToolchainError(BuildError):
    """The compiler toolchain (emscripten, TVM, the web runtime) is missing or broken."""
