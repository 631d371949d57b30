from triodist.cli import console_main

console_main()
