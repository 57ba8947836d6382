"""The fault suite (see README.md). A package so that its conftest does not shadow Tests/EndToEnd/conftest.py
(`from conftest import ...` there) when both directories run in one pytest session."""
