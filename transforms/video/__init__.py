"""What is particular to video quality of experience: CMCD reports, sessions."""
