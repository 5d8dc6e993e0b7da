"""The engine: load -> read -> chunk -> prompt -> call -> validate -> resolve -> store."""
