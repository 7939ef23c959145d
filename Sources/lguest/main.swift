print("lguest")
