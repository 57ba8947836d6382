"""Deploy-kit tests (a package, so its conftest does not shadow Tests/EndToEnd's in one pytest session)."""
