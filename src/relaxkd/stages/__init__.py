"""Stage runners over the artifact store: embed, relax, teachers, distill, attribute, run, sweep."""
