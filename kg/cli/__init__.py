"""Click front end for kg: parse flags, call the kg library, render tables or JSON."""
