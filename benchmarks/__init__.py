"""Scripts that print figures. They never pass or fail on a number."""
